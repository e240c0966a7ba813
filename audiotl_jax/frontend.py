"""On-device audio front end: log-mel features, SpecAugment, mixup, normalisation.

Everything here is a pure function of arrays meant to run inside the jitted train step, so the
host pipeline only ships raw PCM and the feature computation is sharded with the batch. Shape
hyperparameters (`n_fft`, `hop_length`, `n_mels`, mask counts, ...) are Python values, static
under `jax.jit`; the mel filterbank and the window are numpy constants built at trace time.

References:
  * librosa (McFee et al., 2015, https://librosa.org): `log_mel` reproduces
    `librosa.power_to_db(librosa.feature.melspectrogram(...), ref=1.0, top_db=None)`.
  * Park et al., 2019, "SpecAugment: A Simple Data Augmentation Method for Automatic Speech
    Recognition", Interspeech, https://arxiv.org/abs/1904.08779.
  * Zhang et al., 2018, "mixup: Beyond Empirical Risk Minimization", ICLR,
    https://arxiv.org/abs/1710.09412.
"""
import functools
import math

import jax
import jax.numpy as jnp
import librosa
import numpy as np

from audiotl_jax.errors import UserError

# librosa.power_to_db's default floor; 10 * log10(1e-10) = -100 dB for silent bins.
_AMIN = 1e-10


def num_frames(num_samples: int, hop_length: int) -> int:
  """Frames `log_mel` makes from `num_samples` samples: 1 + num_samples // hop_length.

  This is librosa's count for `center=True` with an even `n_fft` (the only kind `log_mel`
  accepts): the signal is padded by n_fft // 2 on both sides and framed every `hop_length`.
  """
  _check_positive_int("num_samples", num_samples)
  _check_positive_int("hop_length", hop_length)
  return 1 + num_samples // hop_length


def pcm_to_float(x: jax.Array) -> jax.Array:
  """int16 PCM -> float32 in [-1, 1), dividing by 32768 (so -32768 maps to exactly -1)."""
  if jnp.dtype(x.dtype) != jnp.int16:
    raise UserError(f"pcm_to_float expects int16 PCM, got dtype {jnp.dtype(x.dtype).name}")
  return x.astype(jnp.float32) / 32768.0


@functools.partial(
    jax.jit, static_argnames=("sample_rate", "n_fft", "hop_length", "n_mels", "fmin", "fmax"))
def log_mel(waveforms: jax.Array, sample_rate: int, n_fft: int, hop_length: int, n_mels: int,
            fmin: float = 0.0, fmax: float | None = None) -> jax.Array:
  """Log-mel spectrogram in dB, frames-major: (batch, samples) -> (batch, frames, n_mels).

  Matches, within 1e-3 dB on random audio,

    librosa.power_to_db(librosa.feature.melspectrogram(
        y=y, sr=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
        fmin=fmin, fmax=fmax), ref=1.0, top_db=None).T

  with librosa 0.11's defaults for everything else: win_length = n_fft, periodic Hann window,
  center=True with zero ('constant') padding of n_fft // 2 on both sides, power 2, Slaney mel
  scale with Slaney area normalisation, amin = 1e-10 (silence is -100 dB).

  Args:
    waveforms: (batch, samples), any float dtype (convert int16 PCM with `pcm_to_float` first).
      Computation runs in float32, or float64 for float64 input with jax x64 enabled.
    sample_rate: Hz, a Python int (static).
    n_fft: FFT size and window length, a positive even Python int (static).
    hop_length: samples between frames (static).
    n_mels: number of mel bands (static).
    fmin: lowest mel band edge in Hz.
    fmax: highest mel band edge in Hz; None means sample_rate / 2.

  Returns:
    (batch, num_frames(samples, hop_length), n_mels) dB values, in the compute dtype.
  """
  _check_stft_args(waveforms, sample_rate, n_fft, hop_length, n_mels, fmin, fmax)
  dtype = jnp.promote_types(waveforms.dtype, jnp.float32)
  frames = _frame(waveforms.astype(dtype), n_fft=n_fft, hop_length=hop_length)
  window = librosa.filters.get_window("hann", n_fft, fftbins=True)  # periodic, like librosa.stft
  # jnp.fft.rfft lowers to one batched FFT (ducc on CPU, cuFFT on GPU): O(n log n) and, in
  # float32, within ~1e-4 dB of librosa's float64 FFT (measured), well inside the 1e-3 dB
  # target. A DFT matmul would keep TPU matrix units busy but costs O(n^2), and at the default
  # matmul precision (bf16 passes on TPU, TF32 on recent GPUs) its ~1e-3 relative error is
  # ~4e-3 dB; at HIGHEST precision it loses the speed it was chosen for.
  spectrum = jnp.fft.rfft(frames * jnp.asarray(window, dtype), n=n_fft, axis=-1)
  power = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2
  filterbank = _mel_filterbank(sample_rate, n_fft, n_mels, float(fmin),
                               None if fmax is None else float(fmax))
  # HIGHEST: keep float32 accumulation on GPUs/TPUs, whose default would round to TF32/bf16.
  mel = jnp.matmul(power, jnp.asarray(filterbank.T, dtype), precision=jax.lax.Precision.HIGHEST)
  return 10.0 * jnp.log10(jnp.maximum(mel, _AMIN))


def _frame(x: jax.Array, *, n_fft: int, hop_length: int) -> jax.Array:
  """Centre-pads (zeros, n_fft // 2 each side) and cuts (batch, frames, n_fft) windows.

  Framing is reshape-based, not a gather: the padded signal is cut into hop-sized chunks
  (batch, chunks, hop) and frame f is chunks f .. f+k-1 concatenated (k = ceil(n_fft / hop)),
  trimmed to n_fft. That is k static slices and one concat, which XLA fuses into contiguous
  copies on every backend, whereas an index gather is slow on TPU and defeats fusion.
  """
  num_samples = x.shape[-1]
  frames = num_frames(num_samples, hop_length)
  chunks_per_frame = -(-n_fft // hop_length)
  total = (frames + chunks_per_frame - 1) * hop_length
  half = n_fft // 2
  # The buffer ends where the last frame's last chunk does; padding past (or cutting before)
  # the centred signal's end only touches samples no frame reads.
  x = jnp.pad(x, ((0, 0), (half, max(0, total - half - num_samples))))[:, :total]
  chunks = x.reshape(x.shape[0], total // hop_length, hop_length)
  windows = jnp.concatenate(
      [chunks[:, j:j + frames] for j in range(chunks_per_frame)], axis=-1)
  return windows[..., :n_fft]


@functools.lru_cache(maxsize=32)
def _mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float,
                    fmax: float | None) -> np.ndarray:
  """librosa's Slaney mel filterbank, (n_mels, 1 + n_fft // 2) float64, cached across traces."""
  bank = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
                             htk=False, norm="slaney", dtype=np.float64)
  bank.setflags(write=False)  # shared through the cache
  return bank


def _check_positive_int(name: str, value) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
    raise UserError(f"{name} must be a positive int, got {value!r}")


def _check_stft_args(waveforms, sample_rate, n_fft, hop_length, n_mels, fmin, fmax) -> None:
  """Trace-time checks, so a bad config fails with its name rather than deep inside XLA."""
  if waveforms.ndim != 2:
    raise UserError(f"log_mel expects waveforms of shape (batch, samples), got shape "
                    f"{tuple(waveforms.shape)}")
  if not jnp.issubdtype(waveforms.dtype, jnp.floating):
    raise UserError(f"log_mel expects float waveforms, got dtype {jnp.dtype(waveforms.dtype).name}"
                    "; convert int16 PCM with pcm_to_float")
  if waveforms.shape[1] == 0:
    raise UserError("log_mel got waveforms with 0 samples")
  for name, value in (("sample_rate", sample_rate), ("n_fft", n_fft),
                      ("hop_length", hop_length), ("n_mels", n_mels)):
    _check_positive_int(name, value)
  if n_fft % 2:
    raise UserError(f"n_fft must be even (centre padding and frame count assume it), got {n_fft}")
  nyquist = sample_rate / 2
  top = nyquist if fmax is None else fmax
  if not (math.isfinite(fmin) and math.isfinite(top) and 0 <= fmin < top <= nyquist):
    raise UserError(f"need 0 <= fmin < fmax <= sample_rate / 2 = {nyquist:g}, got fmin={fmin!r}, "
                    f"fmax={fmax!r}")


@functools.partial(jax.jit, static_argnames=("freq_masks", "freq_width", "time_masks",
                                             "time_width", "mask_value"))
def spec_augment(rng: jax.Array, features: jax.Array, *, freq_masks: int = 2, freq_width: int = 8,
                 time_masks: int = 2, time_width: int = 20, mask_value: float = 0.0) -> jax.Array:
  """SpecAugment frequency and time masking (Park et al., 2019), without time warping.

  Each example gets its own `freq_masks` bands of bins and `time_masks` spans of frames set to
  `mask_value`. A mask's width is uniform in {0, ..., width} (capped at the axis size) and its
  start uniform over the positions where it fits, as in the paper. Masks are built from iota
  comparisons, so shapes are static and nothing is sliced dynamically.

  Args:
    rng: a PRNG key; the result is a pure function of it.
    features: (batch, frames, bins), e.g. `log_mel` output. The default mask_value=0.0 is
      the mean once features went through `normalize`, the usual place for SpecAugment; on
      raw dB features pass a neutral value yourself (e.g. the dataset mean).
    freq_masks, freq_width: how many frequency masks, and the largest width in bins.
    time_masks, time_width: how many time masks, and the largest width in frames.
    mask_value: the value written into masked cells.

  Returns:
    Features of the same shape and dtype.
  """
  if features.ndim != 3:
    raise UserError(f"spec_augment expects features of shape (batch, frames, bins), got shape "
                    f"{tuple(features.shape)}")
  for name, value in (("freq_masks", freq_masks), ("freq_width", freq_width),
                      ("time_masks", time_masks), ("time_width", time_width)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
      raise UserError(f"spec_augment: {name} must be a non-negative int, got {value!r}")
  batch, frames, bins = features.shape
  freq_rng, time_rng = jax.random.split(rng)
  freq = _band_mask(freq_rng, batch=batch, size=bins, count=freq_masks, width=freq_width)
  time = _band_mask(time_rng, batch=batch, size=frames, count=time_masks, width=time_width)
  masked = freq[:, None, :] | time[:, :, None]
  return jnp.where(masked, jnp.asarray(mask_value, features.dtype), features)


def _band_mask(rng: jax.Array, *, batch: int, size: int, count: int, width: int) -> jax.Array:
  """(batch, size) bool: the union of `count` random bands of width U{0..width} per example."""
  width = min(width, size)
  width_rng, start_rng = jax.random.split(rng)
  widths = jax.random.randint(width_rng, (batch, count, 1), 0, width + 1)
  # maxval is exclusive: starts lie in [0, size - w], so every band fits inside the axis.
  starts = jax.random.randint(start_rng, (batch, count, 1), 0, size - widths + 1)
  position = jax.lax.broadcasted_iota(jnp.int32, (batch, count, size), 2)
  return jnp.any((position >= starts) & (position < starts + widths), axis=1)


@functools.partial(jax.jit, static_argnames=("alpha",))
def mixup(rng: jax.Array, x: jax.Array, y: jax.Array, *,
          alpha: float) -> tuple[jax.Array, jax.Array]:
  """mixup (Zhang et al., 2018): blend each example with a partner from the same batch.

  With a random permutation `p` of the batch and lambda_i ~ Beta(alpha, alpha) per example,
  returns x_i' = lambda_i x_i + (1 - lambda_i) x_p(i) and y_i' likewise with the same lambda_i,
  so a one-hot (or any sum-to-one) label row keeps summing to one. Apply it inside the train
  step, on the waveforms or on the features (before SpecAugment), after the batch is on the
  device: the partner is another example of the global batch, so under a data-sharded batch
  XLA inserts the cross-device gather for `x[p]` itself.

  Args:
    rng: a PRNG key; the result is a pure function of it.
    x: (batch, ...) float inputs (waveforms or features).
    y: (batch, classes) float labels, one-hot or multi-hot.
    alpha: Beta concentration (static); alpha <= 0 turns mixup off and returns (x, y) as is.

  Returns:
    (x', y') with the shapes and dtypes of (x, y).
  """
  if not (jnp.issubdtype(x.dtype, jnp.floating) and jnp.issubdtype(y.dtype, jnp.floating)):
    raise UserError(f"mixup needs float x and y (labels as one-hot/multi-hot floats), got "
                    f"{jnp.dtype(x.dtype).name} and {jnp.dtype(y.dtype).name}")
  if x.ndim < 1 or y.ndim < 1 or x.shape[0] != y.shape[0]:
    raise UserError(f"mixup needs x and y with the same batch size, got shapes "
                    f"{tuple(x.shape)} and {tuple(y.shape)}")
  if not math.isfinite(alpha):
    raise UserError(f"mixup alpha must be finite, got {alpha!r}")
  if alpha <= 0:
    return x, y
  batch = x.shape[0]
  perm_rng, lam_rng = jax.random.split(rng)
  partner = jax.random.permutation(perm_rng, batch)
  lam = jax.random.beta(lam_rng, alpha, alpha, (batch,), dtype=jnp.float32)
  return _blend(x, x[partner], lam), _blend(y, y[partner], lam)


def _blend(a: jax.Array, b: jax.Array, lam: jax.Array) -> jax.Array:
  """lam * a + (1 - lam) * b with lam broadcast over the trailing axes, in a's dtype."""
  lam = lam.reshape(lam.shape + (1,) * (a.ndim - 1))
  dtype = jnp.promote_types(a.dtype, jnp.float32)  # blend bf16 inputs in float32
  mixed = lam.astype(dtype) * a.astype(dtype) + (1 - lam).astype(dtype) * b.astype(dtype)
  return mixed.astype(a.dtype)


def random_gain(rng: jax.Array, waveforms: jax.Array, *, max_db: float) -> jax.Array:
  """Scales each waveform by its own gain, uniform in [-max_db, max_db] dB.

  Recordings differ in level by tens of dB; a model should not key on it. Apply to float
  waveforms inside the train step (before the log-mel, where a gain is a per-clip offset the
  normalisation does not undo). No clipping: the float signal may exceed full scale.
  """
  if max_db <= 0:
    return waveforms
  db = jax.random.uniform(rng, (waveforms.shape[0],), minval=-max_db, maxval=max_db)
  gain = jnp.power(10.0, db / 20.0).astype(waveforms.dtype)
  return waveforms * gain.reshape((-1,) + (1,) * (waveforms.ndim - 1))


def normalize(features: jax.Array, mean, std) -> jax.Array:
  """(features - mean) / std, with statistics from `feature_stats` on a few training batches."""
  return (features - mean) / std


@jax.jit
def feature_stats(features: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Scalar mean and standard deviation over every element of a batch of features.

  Computed in at least float32 (two-pass, so large dB offsets do not cancel). Average the
  results of a few training batches and pass them to `normalize`.
  """
  x = features.astype(jnp.promote_types(features.dtype, jnp.float32))
  mean = jnp.mean(x)
  return mean, jnp.sqrt(jnp.mean(jnp.square(x - mean)))
