"""Linear CKA: how alike two representations of the same clips are.

`linear_cka(x, y)` is centred kernel alignment with linear kernels (Kornblith, Norouzi, Lee and
Hinton 2019, "Similarity of Neural Network Representations Revisited", ICML):

  CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)),  K = X X^T, L = Y Y^T, X and Y centred,

which for linear kernels is ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F). It is 1 for identical
inputs, invariant to orthogonal transforms and isotropic scaling of either side, but not to
arbitrary invertible linear maps. The two matrices may have different widths; the rows must be
the same clips in the same order.

`minibatch_cka(x, y)` is the minibatch form of Nguyen, Raghu and Kornblith (2021, "Do Wide and
Deep Networks Learn the Same Things?", ICLR): the unbiased HSIC estimator of Song et al. (2012)
on each minibatch, averaged over minibatches, then combined as above. It is an unbiased
estimate of the population CKA, unlike the full form's biased HSIC (the two agree as N grows),
and it reads the rows chunk by chunk (memory-mapped .npy files, as `streaming.py` does), so N
may exceed memory. Rows are drawn into minibatches by a seeded permutation: a split stored in
class order would otherwise give batches of one class, whose average HSIC is not the HSIC of
the mixture.
"""
import jax
import jax.numpy as jnp
import numpy as np

from audiotl_jax.errors import UserError
from audiotl_jax.scores import _checks
from audiotl_jax.scores.streaming import _prefetched

BATCH_SIZE = 1024


def linear_cka(x, y) -> jax.Array:
  """Linear CKA of (N, Dx) `x` and (N, Dy) `y`, rows the same clips; a 0-d array in [0, 1].

  Float32 agrees with float64 to ~1e-6 on well-scaled features. NaN when either side is
  constant over the clips (no variance to align).
  """
  x, y = _pair(x, y)
  return linear_cka_core(x, y)


@jax.jit
def linear_cka_core(x: jax.Array, y: jax.Array) -> jax.Array:
  """`linear_cka` on checked arrays."""
  x = x - jnp.mean(x, axis=0)
  y = y - jnp.mean(y, axis=0)
  dot = lambda a, b: jnp.matmul(a, b, precision=_checks.HIGHEST)
  n, width = x.shape[0], max(x.shape[1], y.shape[1])
  if width <= n:  # static: the feature-space form, D x D products
    xy, xx, yy = dot(y.T, x), dot(x.T, x), dot(y.T, y)
    return jnp.sum(xy ** 2) / jnp.sqrt(jnp.sum(xx ** 2) * jnp.sum(yy ** 2))
  k, l = dot(x, x.T), dot(y, y.T)  # the sample-space form, N x N, for wide layers
  return jnp.sum(k * l) / jnp.sqrt(jnp.sum(k * k) * jnp.sum(l * l))


def minibatch_cka(x, y, *, batch_size: int = BATCH_SIZE, seed: int = 0,
                  shuffle: bool = True) -> float:
  """Minibatch linear CKA of (N, Dx) `x` and (N, Dy) `y`, read in minibatches of rows.

  Args:
    x, y: anything sliceable by a sorted index array (np.memmap, np.ndarray), rows the same
      clips.
    batch_size: at most this many rows per minibatch; the N rows are split into
      ceil(N / batch_size) minibatches of nearly equal size (each needs at least 4 rows).
    seed: the permutation that draws rows into minibatches (`shuffle=False`: in stored order).

  Returns:
    The estimate, a float. It may fall slightly outside [0, 1]: the unbiased HSIC can be
    negative for unrelated features.
  """
  n = x.shape[0]
  if y.shape[0] != n:
    raise UserError(f"x has {n} rows but y has {y.shape[0]}; CKA compares the same clips")
  if x.ndim != 2 or y.ndim != 2:
    raise UserError(f"x and y must be 2-D (clips, dims), got shapes {x.shape} and {y.shape}")
  if n < 4:
    raise UserError(f"minibatch CKA needs at least 4 clips, got {n}")
  order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
  batches = np.array_split(order, -(-n // max(4, batch_size)))
  size = max(len(b) for b in batches)
  if min(len(b) for b in batches) < 4:
    raise UserError(f"batch_size {batch_size} leaves a minibatch under 4 rows; use at least 8")
  dtype = _checks.float_dtype()
  # A shift (the first minibatch's means) keeps float32 products free of large common offsets;
  # the unbiased HSIC of linear kernels does not change under it.
  first = np.sort(batches[0])
  shifts = [np.asarray(a[first], np.float64).mean(axis=0) for a in (x, y)]

  def host_chunks():
    for rows in batches:
      rows = np.sort(rows)  # sequential reads of the memory map
      out = []
      for a, shift in zip((x, y), shifts):
        chunk = np.zeros((size, a.shape[1]), dtype)
        chunk[:len(rows)] = np.asarray(a[rows], np.float64) - shift
        if not np.isfinite(chunk).all():
          raise UserError(f"CKA input has NaN/inf values (in rows {rows[0]}..{rows[-1]})")
        out.append(chunk)
      yield out[0], out[1], len(rows)

  total = np.zeros(3)
  for cx, cy, rows in _prefetched(host_chunks()):
    total += np.asarray(_hsic_terms(cx, cy, jnp.asarray(rows, dtype)), np.float64)
  xy, xx, yy = total / len(batches)
  return float(xy / np.sqrt(xx * yy)) if xx > 0 and yy > 0 else float("nan")


@jax.jit
def _hsic_terms(x, y, n):
  """(HSIC_1(K, L), HSIC_1(K, K), HSIC_1(L, L)) of one minibatch: rows past `n` are zero, which
  adds nothing to a linear kernel's entries, so one compiled shape serves every minibatch."""
  dot = lambda a, b: jnp.matmul(a, b, precision=_checks.HIGHEST)
  k, l = dot(x, x.T), dot(y, y.T)
  k = k - jnp.diag(jnp.diagonal(k))
  l = l - jnp.diag(jnp.diagonal(l))
  return jnp.stack([_unbiased_hsic(k, l, n), _unbiased_hsic(k, k, n), _unbiased_hsic(l, l, n)])


def _unbiased_hsic(k, l, n):
  """Song et al. (2012), eq. 5, on kernels with zeroed diagonals:
  [tr(KL) + 1'K1 1'L1 / ((n-1)(n-2)) - 2/(n-2) 1'KL1] / (n(n-3))."""
  trace = jnp.sum(k * l)  # tr(K L) for symmetric L
  cross = jnp.dot(jnp.sum(k, axis=0), jnp.sum(l, axis=1), precision=_checks.HIGHEST)
  return (trace + jnp.sum(k) * jnp.sum(l) / ((n - 1) * (n - 2)) - 2 / (n - 2) * cross) / (
      n * (n - 3))


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
  x, y = _checks.check_matrix(x, "x"), _checks.check_matrix(y, "y")
  if x.shape[0] != y.shape[0]:
    raise UserError(f"x has {x.shape[0]} rows but y has {y.shape[0]}; CKA compares the same "
                    "clips")
  return x, y
