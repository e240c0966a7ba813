"""Host-side validation shared by the scores: degenerate input fails here, never as a NaN.

Every public score converts its arguments with these helpers, maps arbitrary integer labels to
0..C-1 with `np.unique`, and only then calls a jitted core with a static class count.
"""
import jax
import jax.numpy as jnp
import numpy as np

from audiotl_jax.errors import UserError

# Matmuls request full precision so that GPUs/TPUs do not round float32 operands to TF32/bf16.
HIGHEST = jax.lax.Precision.HIGHEST


def float_dtype() -> np.dtype:
  """float64 under jax x64 (including the `jax.enable_x64` context), else float32."""
  return jax.dtypes.canonicalize_dtype(jnp.float64)


def check_labels(labels, num_rows: int, what: str, *, name: str = "labels",
                 min_classes: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Contiguous int32 labels, the original class values and per-class counts, or a UserError."""
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise UserError(f"{name} must be 1-D, got shape {labels.shape}")
  if labels.dtype.kind not in "iu":
    raise UserError(f"{name} must be integers, got dtype {labels.dtype}")
  if labels.shape[0] != num_rows:
    raise UserError(f"{what} has {num_rows} rows but {name} has {labels.shape[0]} entries")
  classes, contiguous, counts = np.unique(labels, return_inverse=True, return_counts=True)
  if classes.size < min_classes:
    raise UserError(f"need at least {min_classes} classes to score transferability, got "
                    f"{classes.size} ({classes.tolist()})")
  return contiguous.reshape(-1).astype(np.int32), classes, counts


def check_matrix(x, what: str) -> np.ndarray:
  """A finite 2-D float array in the score dtype, or a UserError naming `what`."""
  x = np.asarray(x)
  if x.ndim != 2:
    raise UserError(f"{what} must be 2-D (samples, dims), got shape {x.shape}")
  if x.dtype.kind not in "fiu":
    raise UserError(f"{what} must be numeric, got dtype {x.dtype}")
  if x.shape[0] == 0 or x.shape[1] == 0:
    raise UserError(f"{what} is empty: shape {x.shape}")
  bad = ~np.isfinite(x)
  if bad.any():
    row = int(np.argwhere(bad)[0, 0])
    raise UserError(f"{what} has {int(bad.sum())} NaN/inf values (first in row {row})")
  return x.astype(float_dtype(), copy=False)


def check_features(features, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(features, contiguous labels, classes, counts) with informative features, or a UserError."""
  features = check_matrix(features, "features")
  labels, classes, counts = check_labels(labels, features.shape[0], "features")
  if not np.ptp(features, axis=0).any():
    raise UserError("features are identical for every sample, so they carry no information "
                    "about the labels (is the feature extractor broken?)")
  return features, labels, classes, counts


def require_two_per_class(classes: np.ndarray, counts: np.ndarray, score: str) -> None:
  """Scores built on class spreads (means and variances) need two samples per class."""
  if (counts < 2).any():
    singles = classes[counts < 2]
    raise UserError(f"{score} needs at least 2 samples per class; {singles.size} class(es) have "
                    f"only one: {singles[:10].tolist()}")


def check_probs(probs, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Source-head probabilities: non-negative rows summing to 1, every column with mass."""
  probs = check_matrix(probs, "probs")
  labels, classes, _ = check_labels(labels, probs.shape[0], "probs")
  if (probs < 0).any():
    raise UserError(f"probs has {int((probs < 0).sum())} negative entries; pass softmax "
                    "probabilities, not logits")
  row_sums = probs.sum(axis=1)
  off = np.abs(row_sums - 1) > 1e-3
  if off.any():
    row = int(np.argmax(off))
    raise UserError(f"probs rows must sum to 1 (within 1e-3); {int(off.sum())} do not, e.g. row "
                    f"{row} sums to {row_sums[row]:.6g}; pass softmax probabilities, not logits")
  empty = probs.sum(axis=0) <= 0
  if empty.any():
    raise UserError(f"{int(empty.sum())} source class(es) get zero probability on every sample "
                    f"(e.g. column {int(np.argmax(empty))}), so P(y | z) is undefined; drop those "
                    "columns")
  return probs, labels, classes
