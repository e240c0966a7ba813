"""The log-mel front end's old import path, kept so notebooks and user code keep working.

New code imports `audiotl_jax.features` (`logmel`, `augment`, `normalization`). `normalize` keeps
its meaning here: (x - mean) / std.
"""
from audiotl_jax.features.augment import mixup
from audiotl_jax.features.augment import random_gain
from audiotl_jax.features.augment import spec_augment
from audiotl_jax.features.logmel import log_mel
from audiotl_jax.features.logmel import num_frames
from audiotl_jax.features.logmel import pcm_to_float
from audiotl_jax.features.normalization import feature_stats
from audiotl_jax.features.normalization import normalize
