"""Audio features computed on the device, inside the jitted steps.

Modules:
  * `logmel`: librosa-exact log-mel spectrogram (`log_mel`, `num_frames`, `pcm_to_float`).
  * `fbank`: Kaldi filterbank as AST computes it (`fbank.fbank`, `ast_features`, AudioSet's
    statistics).
  * `panns`: PANNs' torchlibrosa log-mel (reflect padding, int16 / 32767) and its two
    set-ups (`SETUPS`: 32 kHz and 16 kHz).
  * `vggish`: VGGish's mel_features log-mel (uncentred frames, magnitude, HTK mel 125-7500 Hz,
    log(x + 0.01)) in whole 96-frame examples (`log_mel_examples`, `num_frames`).
  * `framing`: the reshape-based framing both front ends use.
  * `normalization`: `normalize` ((x - mean) / std) and `feature_stats`.
  * `augment`: SpecAugment, mixup, random gain.
  * `featurizer`: the configured front end as one function (`make_featurizer`), and its frame
    count (`feature_frames`).

The `fbank` function is reached as `features.fbank.fbank`: re-exporting it here would hide the
module of the same name.
"""
from audiotl_jax.features.augment import mixup
from audiotl_jax.features.augment import random_gain
from audiotl_jax.features.augment import spec_augment
from audiotl_jax.features.fbank import AUDIOSET_MEAN
from audiotl_jax.features.fbank import AUDIOSET_STD
from audiotl_jax.features.fbank import ast_features
from audiotl_jax.features.featurizer import feature_frames
from audiotl_jax.features.featurizer import make_featurizer
from audiotl_jax.features.logmel import log_mel
from audiotl_jax.features.logmel import pcm_to_float
from audiotl_jax.features.normalization import feature_stats
from audiotl_jax.features.normalization import normalize
