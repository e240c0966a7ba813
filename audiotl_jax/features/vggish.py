"""VGGish's own input features, on the device: log-mel examples of 96 frames x 64 bands.

VGGish (Hershey et al., 2017, "CNN Architectures for Large-Scale Audio Classification", ICASSP;
https://github.com/tensorflow/models/tree/master/research/audioset/vggish) was trained on the
features of its `mel_features.py`, which differ from librosa's in every step, so the weights
need them exactly:

  * 16 kHz; frames of 25 ms (400 samples) every 10 ms (160), WITHOUT centre padding: a clip of
    n samples gives 1 + (n - 400) // 160 frames;
  * a periodic Hann window, the frame zero-padded to a 512-point FFT, the MAGNITUDE (not power);
  * 64 triangular HTK-scale mel bands from 125 to 7500 Hz, unnormalised, with the DC bin left out;
  * log(mel + 0.01);
  * non-overlapping examples of 96 frames (0.96 s); frames past the last full example are
    dropped, as `vggish_input.waveform_to_examples` does.

A clip shorter than one example (15,600 samples, 0.975 s) is padded with silence up to it, so
every clip yields at least one example; the official code would yield none and fail later. The
features are never normalised: the released weights expect these values as they are.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from audiotl_jax.errors import UserError
from audiotl_jax.features import framing

SAMPLE_RATE = 16000
WINDOW = 400           # samples per STFT frame (25 ms)
HOP = 160              # samples between frames (10 ms)
FFT = 512              # the next power of two above the window
N_MELS = 64
FMIN, FMAX = 125.0, 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96    # 0.96 s per example, no overlap
MIN_SAMPLES = WINDOW + (EXAMPLE_FRAMES - 1) * HOP  # 15,600: the shortest clip with one example


def stft_frames(num_samples: int) -> int:
  """Frames of the uncentred STFT: 1 + (n - 400) // 160, after padding to one example."""
  return 1 + (max(int(num_samples), MIN_SAMPLES) - WINDOW) // HOP


def num_examples(num_samples: int) -> int:
  """Whole 96-frame examples in a clip (at least 1: short clips are padded)."""
  if isinstance(num_samples, bool) or int(num_samples) < 1:
    raise UserError(f"a VGGish clip needs at least one sample, got {num_samples!r}")
  return stft_frames(num_samples) // EXAMPLE_FRAMES


def num_frames(num_samples: int) -> int:
  """Feature frames `log_mel_examples` returns: whole examples x 96."""
  return num_examples(num_samples) * EXAMPLE_FRAMES


def frontend_config() -> dict:
  """The `frontend` config block of a VGGish checkpoint (the keys every frontend block has).

  The featurizer ignores normalisation statistics for this kind; one batch keeps the statistics
  the training loop computes anyway finite and cheap.
  """
  return dict(kind="vggish", sample_rate=SAMPLE_RATE, n_fft=FFT, hop_length=HOP, n_mels=N_MELS,
              fmin=FMIN, fmax=FMAX, norm_batches=1, target_frames=0, fbank_mean=0.0,
              fbank_std=1.0)


def hertz_to_mel(hz):
  """The HTK mel scale, in mel_features' form: 1127 ln(1 + f / 700)."""
  return 1127.0 * np.log1p(np.asarray(hz, np.float64) / 700.0)


@functools.lru_cache(maxsize=4)
def mel_matrix(num_bins: int = N_MELS, fft: int = FFT, sample_rate: int = SAMPLE_RATE,
               fmin: float = FMIN, fmax: float = FMAX) -> np.ndarray:
  """(1 + fft // 2, num_bins) float64: triangles in mel between equally spaced mel edges.

  The FFT bins sit at linspace(0, nyquist, 1 + fft // 2); band i rises from edge i to edge i + 1
  and falls to edge i + 2 linearly in mel, with no area normalisation. The DC row is zero, as HTK.
  """
  bins = hertz_to_mel(np.linspace(0.0, sample_rate / 2, 1 + fft // 2))[:, None]
  edges = np.linspace(hertz_to_mel(fmin), hertz_to_mel(fmax), num_bins + 2)
  lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
  rising = (bins - lower) / (centre - lower)
  falling = (upper - bins) / (upper - centre)
  matrix = np.maximum(0.0, np.minimum(rising, falling))
  matrix[0] = 0.0
  matrix.setflags(write=False)  # shared through the cache
  return matrix


def periodic_hann(length: int = WINDOW) -> np.ndarray:
  """0.5 - 0.5 cos(2 pi k / N): one full period, ending just before the final zero."""
  return 0.5 - 0.5 * np.cos(2.0 * np.pi / length * np.arange(length))


@jax.jit
def log_mel_examples(waveforms: jax.Array) -> jax.Array:
  """(batch, samples) float in [-1, 1) -> (batch, examples * 96, 64) log-mel frames.

  Equals mel_features.log_mel_spectrogram + example framing, clip by clip, within about 1e-5 in
  log space in float32 (the reference computes in float64).
  """
  if waveforms.ndim != 2 or not jnp.issubdtype(waveforms.dtype, jnp.floating):
    raise UserError(f"VGGish features need float waveforms of shape (batch, samples), got "
                    f"{jnp.dtype(waveforms.dtype).name} {tuple(waveforms.shape)}")
  n = waveforms.shape[1]
  dtype = jnp.promote_types(waveforms.dtype, jnp.float32)
  x = jnp.pad(waveforms.astype(dtype), ((0, 0), (0, max(0, MIN_SAMPLES - n))))
  keep = num_frames(n)
  # Only the frames of whole examples are computed; the rest would be dropped anyway.
  frames = framing.frame_signal(x, frame_length=WINDOW, hop_length=HOP, num_frames=keep)
  spectrum = jnp.fft.rfft(frames * jnp.asarray(periodic_hann(), dtype), n=FFT, axis=-1)
  magnitude = jnp.abs(spectrum)
  # HIGHEST: float32 accumulation on GPUs/TPUs, whose default rounds to TF32/bf16 (~1e-3).
  mel = jnp.matmul(magnitude, jnp.asarray(mel_matrix(), dtype),
                   precision=jax.lax.Precision.HIGHEST)
  return jnp.log(mel + LOG_OFFSET)


def check_frontend(fcfg) -> None:
  """A `frontend` block of kind vggish must keep VGGish's fixed rate and band count."""
  rate, mels = int(fcfg.get("sample_rate", SAMPLE_RATE)), int(fcfg.get("n_mels", N_MELS))
  if rate != SAMPLE_RATE or mels != N_MELS:
    raise UserError(f"frontend kind 'vggish' is fixed at {SAMPLE_RATE} Hz and {N_MELS} mel bands; "
                    f"config key 'frontend' gives sample_rate={rate}, n_mels={mels}")
