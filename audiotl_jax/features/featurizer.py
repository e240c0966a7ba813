"""The configured front end as one function, called inside the jitted train and predict steps.

Waveforms arrive as int16 and become features on the device: PCM to float, (training only) a
random gain, log-mel or AST's fbank, normalisation, then (training only) SpecAugment. mixup
needs the labels too, so the train step applies it. Config block `frontend` picks the kind
(`logmel`, `fbank` for AST, `panns`, `vggish`) and its sizes.
"""
import jax
import numpy as np

from audiotl_jax.features import fbank
from audiotl_jax.features import logmel
from audiotl_jax.features import panns
from audiotl_jax.features import vggish
from audiotl_jax.features.augment import random_gain
from audiotl_jax.features.augment import spec_augment
from audiotl_jax.features.normalization import normalize


def norm_args(norm: dict | None) -> np.ndarray:
  """The statistics as the float32 array `featurize(..., norm=)` takes: [mean, std]."""
  norm = norm or {"mean": 0.0, "std": 1.0}
  return np.asarray([norm["mean"], norm["std"]], np.float32)


def make_featurizer(fcfg, norm: dict | None):
  """Returns `featurize(audio_int16, rng, train, augment, norm)` -> (batch, frames, n_mels).

  `norm` given at call time (`norm_args`, traced) replaces the statistics given here. Programs
  run by many runs (a sweep's train and predict steps) take it that way: a Python float is baked
  into the compiled program as a constant, so each dataset's statistics would be another program
  for the persistent compilation cache to miss.
  """
  # Python floats when fixed: weakly typed, so float64 features stay float64.
  fixed = (float(norm["mean"]), float(norm["std"])) if norm else None
  if fcfg.get("kind") == "vggish":
    vggish.check_frontend(fcfg)

  def featurize(audio, rng=None, train=False, augment=None, norm=None):
    stats = fixed if norm is None else (norm[0], norm[1])
    mean, std = stats or (0.0, 1.0)
    # PANNs' weights saw int16 / 32767, the others / 32768.
    x = (panns.pcm_to_float if fcfg.get("kind") == "panns" else logmel.pcm_to_float)(audio)
    if train and augment is not None and augment.get("gain_db", 0.0) > 0:
      # Its own key, so turning gain on leaves SpecAugment's masks as they were.
      x = random_gain(jax.random.fold_in(rng, 1), x, max_db=augment.gain_db)
    if fcfg.get("kind", "logmel") == "fbank":
      # AST's Kaldi fbank: padded to the target frames, then (x - mean) / (2 * std).
      f = fbank.ast_features(x, sample_rate=fcfg.sample_rate, num_mel_bins=fcfg.n_mels,
                             target_frames=fcfg.get("target_frames", 0),
                             mean=None if stats is None else mean, std=std)
    elif fcfg.get("kind") == "panns":
      # torchlibrosa's log-mel (reflect padding); no normalisation: the model's bn0 does it.
      f = panns.log_mel(x, fcfg.sample_rate, fcfg.n_fft, fcfg.hop_length, fcfg.n_mels,
                        fmin=fcfg.fmin, fmax=fcfg.fmax)
    elif fcfg.get("kind") == "vggish":
      # mel_features' fixed log-mel in whole 96-frame examples; never normalised: VGGish's
      # weights expect these values as they are.
      f = vggish.log_mel_examples(x)
    else:
      f = logmel.log_mel(x, fcfg.sample_rate, fcfg.n_fft, fcfg.hop_length, fcfg.n_mels,
                         fmin=fcfg.fmin, fmax=fcfg.fmax or None)
      f = normalize(f, mean, std)
    if train and augment is not None and augment.specaugment:
      f = spec_augment(
          rng, f, freq_masks=augment.freq_masks, freq_width=augment.freq_width,
          time_masks=augment.time_masks, time_width=augment.time_width)
    return f

  return featurize


def feature_frames(fcfg, num_samples: int) -> int:
  """Frames the configured frontend (`kind` logmel, fbank, panns or vggish) makes from
  `num_samples`."""
  if fcfg.get("kind", "logmel") == "fbank":
    target = int(fcfg.get("target_frames", 0))
    return target if target > 0 else fbank.num_frames(num_samples, fcfg.sample_rate)
  if fcfg.get("kind") == "panns":
    return panns.num_frames(num_samples, fcfg.hop_length)
  if fcfg.get("kind") == "vggish":
    return vggish.num_frames(num_samples)
  return logmel.num_frames(num_samples, fcfg.hop_length)
