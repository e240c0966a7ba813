"""The log-mel frontend of PANNs (Kong et al., 2020), with torchlibrosa's conventions.

PANNs compute features inside the model (torchlibrosa's `Spectrogram` and `LogmelFilterBank`):
a centred STFT with *reflect* padding of n_fft // 2 on both sides, periodic Hann window,
win_length = n_fft, power 2, librosa's Slaney mel filterbank between fmin and fmax, then
10 * log10(max(x, 1e-10)) with ref 1.0 and no top_db. It differs from `logmel.log_mel` only in
the padding (librosa >= 0.10 pads with zeros) and in the int16 scale: PANNs' training data
went through `x / 32767`, so `pcm_to_float` divides by that. There is no dataset
normalisation: the model's `bn0` BatchNorm normalises each mel bin.

`SETUPS` holds the two set-ups the released weights were trained with (the official
`Cnn14_16k` class asserts the 16 kHz one); `stft_kernels` and `mel_matrix` rebuild the buffers a
released checkpoint carries, so an import can check them.

Reference: https://github.com/qiuqiangkong/audioset_tagging_cnn (pytorch/models.py) and
https://github.com/qiuqiangkong/torchlibrosa (torchlibrosa/stft.py).
"""
import functools

import jax
import jax.numpy as jnp
import librosa
import numpy as np

from audiotl_jax.errors import UserError, unknown_name
from audiotl_jax.features import framing

AMIN = 1e-10
PCM_SCALE = 32767.0  # the official int16_to_float32

# name -> frontend settings; the keys are those of config block `frontend`.
SETUPS = {
    "32k": dict(sample_rate=32000, n_fft=1024, hop_length=320, n_mels=64, fmin=50.0,
                fmax=14000.0),
    "16k": dict(sample_rate=16000, n_fft=512, hop_length=160, n_mels=64, fmin=50.0,
                fmax=8000.0),
}


def setup(name: str) -> dict:
  """The frontend settings of set-up `name` (a fresh dict)."""
  if name not in SETUPS:
    raise unknown_name("PANNs frontend set-up", name, SETUPS)
  return dict(SETUPS[name])


def describe(name: str) -> str:
  s = SETUPS[name]
  return (f"the {s['sample_rate'] // 1000} kHz set-up (window {s['n_fft']}, hop "
          f"{s['hop_length']}, {s['n_mels']} mels, {s['fmin']:g}-{s['fmax']:g} Hz)")


def num_frames(num_samples: int, hop_length: int) -> int:
  """Frames of a centred STFT: 1 + num_samples // hop_length (1001 for 10 s at 16 kHz, hop 160)."""
  return 1 + int(num_samples) // int(hop_length)


def pcm_to_float(x: jax.Array) -> jax.Array:
  """int16 PCM -> float32 as PANNs' training data: x / 32767."""
  if jnp.dtype(x.dtype) != jnp.int16:
    raise UserError(f"pcm_to_float expects int16 PCM, got dtype {jnp.dtype(x.dtype).name}")
  return x.astype(jnp.float32) / PCM_SCALE


@functools.lru_cache(maxsize=16)
def window(n_fft: int) -> np.ndarray:
  """Periodic Hann, float64 (librosa's `get_window('hann', n, fftbins=True)`)."""
  w = librosa.filters.get_window("hann", n_fft, fftbins=True).astype(np.float64)
  w.setflags(write=False)
  return w


@functools.lru_cache(maxsize=16)
def mel_matrix(sample_rate: int, n_fft: int, n_mels: int, fmin: float,
               fmax: float) -> np.ndarray:
  """(1 + n_fft // 2, n_mels) float64: torchlibrosa's `melW` (librosa's Slaney filterbank)."""
  bank = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
                             htk=False, norm="slaney", dtype=np.float64).T
  bank.setflags(write=False)
  return bank


def stft_kernels(n_fft: int) -> tuple[np.ndarray, np.ndarray]:
  """torchlibrosa's conv1d STFT kernels (1 + n_fft // 2, 1, n_fft): window * cos, window * -sin."""
  k = np.arange(n_fft // 2 + 1)[:, None]
  n = np.arange(n_fft)[None, :]
  # The product k * n modulo n_fft keeps the angle small, so float64 is exact to ~1e-16.
  angle = 2 * np.pi * ((k * n) % n_fft) / n_fft
  w = window(n_fft)
  return (np.cos(angle) * w)[:, None, :], (-np.sin(angle) * w)[:, None, :]


@functools.partial(
    jax.jit, static_argnames=("sample_rate", "n_fft", "hop_length", "n_mels", "fmin", "fmax"))
def log_mel(waveforms: jax.Array, sample_rate: int, n_fft: int, hop_length: int, n_mels: int,
            fmin: float = 50.0, fmax: float = 14000.0) -> jax.Array:
  """(batch, samples) float -> (batch, 1 + samples // hop_length, n_mels) dB, as torchlibrosa.

  Matches librosa.stft(center=True, pad_mode='reflect') power -> librosa's mel -> 10 *
  log10(max(x, 1e-10)) within 1e-3 dB. Reflect padding needs more than n_fft // 2 samples.
  """
  if waveforms.ndim != 2:
    raise UserError(f"PANNs log_mel expects waveforms of shape (batch, samples), got shape "
                    f"{tuple(waveforms.shape)}")
  if n_fft % 2 or waveforms.shape[1] <= n_fft // 2:
    raise UserError(f"PANNs log_mel: reflect padding needs an even n_fft and more than "
                    f"n_fft // 2 = {n_fft // 2} samples; got n_fft {n_fft}, "
                    f"{waveforms.shape[1]} samples")
  dtype = jnp.promote_types(waveforms.dtype, jnp.float32)
  half = n_fft // 2
  padded = jnp.pad(waveforms.astype(dtype), ((0, 0), (half, half)), mode="reflect")
  frames = framing.frame_signal(padded, frame_length=n_fft, hop_length=hop_length,
                                num_frames=num_frames(waveforms.shape[1], hop_length))
  # rfft rather than torchlibrosa's DFT-as-conv1d: the same numbers (within float32 rounding)
  # at O(n log n); see logmel.log_mel for the precision argument.
  spectrum = jnp.fft.rfft(frames * jnp.asarray(window(n_fft), dtype), n=n_fft, axis=-1)
  power = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2
  bank = mel_matrix(sample_rate, n_fft, n_mels, float(fmin), float(fmax))
  mel = jnp.matmul(power, jnp.asarray(bank, dtype), precision=jax.lax.Precision.HIGHEST)
  return 10.0 * jnp.log10(jnp.maximum(mel, AMIN))
