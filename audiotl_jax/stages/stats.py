"""`audiotl stats`: a prepared dataset's fbank statistics, for AST's normalisation.

AST normalises with fixed statistics (AudioSet's by default); fine-tuning on another dataset
may use that dataset's own, measured here as AST's get_norm_stats.py measures them
(https://github.com/YuanGongND/ast/blob/master/src/get_norm_stats.py) and passed as
`--config.frontend.fbank_mean` / `fbank_std`.
"""
import jax
import jax.numpy as jnp
import numpy as np

from audiotl_jax import fileio
from audiotl_jax.data import pipeline
from audiotl_jax.data.dataset import PreparedDataset
from audiotl_jax.errors import UserError
from audiotl_jax.features.fbank import ast_features


def dataset_stats(dataset_dir, *, split: str = "train", target_frames: int = 0,
                  clip_seconds: float = 0.0, num_mel_bins: int = 128, batch_size: int = 32,
                  max_batches: int = 0) -> dict:
  """Mean and std of a prepared dataset's fbank features, padded as training pads them.

  AST's get_norm_stats.py measures the same quantity (padded fbank, no normalisation); the std
  here pools the variances over the batches rather than averaging per-batch stds, so it is the
  std of all features together. Padding rows of the last batch are left out.
  """
  dataset = PreparedDataset(dataset_dir)
  if split not in dataset.splits:
    raise UserError(f"split {split!r} is not in {dataset.path}; splits: "
                    f"{', '.join(dataset.splits)}")
  seconds = clip_seconds or dataset.manifest.get("clip_seconds") or 10.0
  clip_samples = int(round(seconds * dataset.sample_rate))
  featurize = jax.jit(lambda a: ast_features(
      a.astype(jnp.float32) / 32768.0, sample_rate=dataset.sample_rate,
      num_mel_bins=num_mel_bins, target_frames=target_frames, mean=None))
  total, s1, s2 = 0, 0.0, 0.0
  batches = pipeline.eval_batches(dataset, split, batch_size=batch_size, clip_samples=clip_samples,
                                  process_index=0, process_count=1)
  for i, batch in enumerate(batches):
    if max_batches and i >= max_batches:
      break
    keep = np.asarray(batch["mask"]) > 0
    f = np.asarray(featurize(jnp.asarray(batch["audio"])), np.float64)[keep]
    total += f.size
    s1 += f.sum()
    s2 += np.square(f).sum()
  if total == 0:
    raise UserError(f"split {split!r} of {dataset.path} has no clips")
  mean = s1 / total
  return {"mean": float(mean), "std": float(np.sqrt(max(s2 / total - mean ** 2, 0.0))),
          "clips_frames_bins": int(total), "split": split, "target_frames": target_frames}


def run(config, workdir=None) -> dict:
  """The command: `dataset_stats` of the flags' dataset, printed as the overrides to pass."""
  del workdir  # nothing is written
  stats = dataset_stats(fileio.path(config.data), split=config.split,
                        target_frames=config.target_frames, num_mel_bins=config.mel_bins,
                        max_batches=config.max_batches)
  print(f"fbank mean {stats['mean']:.7f} std {stats['std']:.7f} ({config.split}); use "
        f"--config.frontend.fbank_mean={stats['mean']:.7f} "
        f"--config.frontend.fbank_std={stats['std']:.7f}")
  return stats
