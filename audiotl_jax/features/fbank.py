"""Kaldi filterbank features in JAX, as the AST recipes compute them, and AST's input shaping.

`fbank` matches

    torchaudio.compliance.kaldi.fbank(waveform - waveform.mean(), htk_compat=True,
        sample_frequency=16000, use_energy=False, window_type='hanning', num_mel_bins=128,
        dither=0.0, frame_shift=10)

(AST's dataloader, https://github.com/YuanGongND/ast/blob/master/src/dataloader.py) for a float
waveform in [-1, 1): 25 ms frames every 10 ms with Kaldi's snip_edges (1 + (n - 400) // 160
frames), each frame's DC offset removed, pre-emphasis 0.97 (the first sample repeated before the
frame), a symmetric Hann window, zero-padding to 512, the power spectrum, 128 triangular filters
equally spaced on Kaldi's mel scale 1127 ln(1 + f / 700) between 20 Hz and Nyquist, and
log(max(energy, float32 eps)). `tests/data/make_fbank_golden.py` made the reference arrays the
tests compare against (torchaudio is not a dependency).

`ast_features` then pads (zeros, in the log domain) or crops to the target frames and normalises
as AST does: pad first, then (x - mean) / (2 * std) (`normalization.normalize` with twice the
std), by default with AudioSet's statistics.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from audiotl_jax.errors import UserError
from audiotl_jax.features import framing
from audiotl_jax.features.normalization import normalize

AUDIOSET_MEAN = -4.2677393
AUDIOSET_STD = 4.5689974
_EPS = float(np.finfo(np.float32).eps)   # torch.finfo(torch.float32).eps, Kaldi's log floor
_PREEMPHASIS = 0.97


def frame_sizes(sample_rate: int, frame_length_ms: float = 25.0,
                frame_shift_ms: float = 10.0) -> tuple[int, int, int]:
  """(window, shift, padded FFT size) in samples, as Kaldi rounds them."""
  window = int(sample_rate * frame_length_ms * 0.001)
  shift = int(sample_rate * frame_shift_ms * 0.001)
  return window, shift, 1 << (window - 1).bit_length()


def num_frames(num_samples: int, sample_rate: int = 16000, frame_length_ms: float = 25.0,
               frame_shift_ms: float = 10.0) -> int:
  """Kaldi's frame count with snip_edges; clips shorter than one window count as one frame."""
  window, shift, _ = frame_sizes(sample_rate, frame_length_ms, frame_shift_ms)
  return 1 + (max(num_samples, window) - window) // shift


@functools.lru_cache(maxsize=16)
def mel_banks(num_bins: int, padded: int, sample_rate: int, low_freq: float = 20.0,
              high_freq: float = 0.0) -> np.ndarray:
  """Kaldi's triangular mel filters, (num_bins, padded // 2 + 1); the Nyquist column is zero."""
  nyquist = 0.5 * sample_rate
  high = high_freq + nyquist if high_freq <= 0 else high_freq
  if not 0 <= low_freq < high <= nyquist:
    raise UserError(f"fbank needs 0 <= low_freq < high_freq <= {nyquist:g} Hz, got "
                    f"{low_freq:g} and {high:g}")
  mel = lambda f: 1127.0 * np.log(1.0 + np.asarray(f, np.float64) / 700.0)
  lo, hi = mel(low_freq), mel(high)
  delta = (hi - lo) / (num_bins + 1)
  b = np.arange(num_bins, dtype=np.float64)[:, None]
  left, center, right = lo + b * delta, lo + (b + 1) * delta, lo + (b + 2) * delta
  m = mel(sample_rate / padded * np.arange(padded // 2))[None, :]
  up = (m - left) / (center - left)
  down = (right - m) / (right - center)
  banks = np.maximum(0.0, np.minimum(up, down))
  banks = np.pad(banks, ((0, 0), (0, 1)))
  banks.setflags(write=False)
  return banks


@functools.partial(jax.jit, static_argnames=("sample_rate", "num_mel_bins", "frame_length_ms",
                                             "frame_shift_ms", "low_freq", "high_freq"))
def fbank(waveforms: jax.Array, sample_rate: int = 16000, num_mel_bins: int = 128,
          frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0, low_freq: float = 20.0,
          high_freq: float = 0.0) -> jax.Array:
  """(batch, samples) float waveforms -> (batch, frames, num_mel_bins) log filterbank energies.

  The waveform mean is removed first, as the AST recipes do before calling Kaldi's fbank.
  """
  if waveforms.ndim != 2 or not jnp.issubdtype(waveforms.dtype, jnp.floating):
    raise UserError(f"fbank expects float waveforms of shape (batch, samples), got "
                    f"{jnp.dtype(waveforms.dtype).name} {tuple(waveforms.shape)}")
  window, shift, padded = frame_sizes(sample_rate, frame_length_ms, frame_shift_ms)
  x = waveforms.astype(jnp.float32)
  x = x - jnp.mean(x, axis=1, keepdims=True)
  n = max(x.shape[1], window)
  frames = num_frames(n, sample_rate, frame_length_ms, frame_shift_ms)
  # snip_edges: frames start at sample 0 and only whole windows count (a short clip is
  # zero-padded to one window).
  w = framing.frame_signal(x, frame_length=window, hop_length=shift, num_frames=frames)
  w = w - jnp.mean(w, axis=-1, keepdims=True)
  w = w - _PREEMPHASIS * jnp.concatenate([w[..., :1], w[..., :-1]], axis=-1)
  w = w * jnp.asarray(np.hanning(window), jnp.float32)
  spectrum = jnp.fft.rfft(w, n=padded, axis=-1)
  power = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2
  banks = mel_banks(num_mel_bins, padded, sample_rate, float(low_freq), float(high_freq))
  energies = jnp.matmul(power, jnp.asarray(banks.T, jnp.float32),
                        precision=jax.lax.Precision.HIGHEST)
  return jnp.log(jnp.maximum(energies, _EPS))


def pad_or_crop(features: jax.Array, target_frames: int) -> jax.Array:
  """Zero-pads (at the end, in the log domain, as AST's ZeroPad2d) or crops to `target_frames`."""
  frames = features.shape[1]
  if target_frames <= 0 or target_frames == frames:
    return features
  if frames > target_frames:
    return features[:, :target_frames]
  return jnp.pad(features, ((0, 0), (0, target_frames - frames), (0, 0)))


def ast_features(waveforms: jax.Array, *, sample_rate: int = 16000, num_mel_bins: int = 128,
                 target_frames: int = 0, mean: float | None = AUDIOSET_MEAN,
                 std: float = AUDIOSET_STD) -> jax.Array:
  """fbank -> pad/crop to `target_frames` (0 keeps the natural count) -> (x - mean) / (2 std).

  `mean=None` skips the normalisation (what `audiotl stats` measures).
  """
  f = pad_or_crop(fbank(waveforms, sample_rate=sample_rate, num_mel_bins=num_mel_bins),
                  target_frames)
  # AST's dataloader divides by twice the std, so features land roughly in [-1, 1].
  return f if mean is None else normalize(f, mean, 2.0 * std)
