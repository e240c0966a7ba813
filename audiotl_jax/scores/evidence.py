"""LogME: the maximum log evidence of a Bayesian linear model on the features.

Two equivalent routes to the same fixed point, chosen by shape as the official code does:
  * N > D: eigendecompose the D x D Gram matrix F^T F. Only F^T F, F^T Y, ||y||^2 and N enter,
    which is what makes LogME streamable (`streaming.py` accumulates exactly these) and fast:
    one N x D x D product and one D x D eigh instead of an N x D SVD.
  * N <= D: thin SVD of F (N x N work).

Two forms of the evidence, which differ only when D > N (see `logme`): the official code's
(`logme`, `logme_regression`, the default, because published LogME numbers are this value)
and the exact evidence of the model (`logme_exact`, `logme_regression_exact`).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from audiotl_jax.errors import UserError
from audiotl_jax.scores import _checks

# The official LogME adds this to the denominators of the alpha and beta updates, so that a
# perfectly fitted target (zero residual) or a zero weight vector cannot divide by zero.
EPSILON = 1e-5
MAX_ITERATIONS = 11
TOLERANCE = 1e-3


def logme(features, labels) -> jax.Array:
  """LogME: mean per-class log marginal evidence of a Bayesian linear model. Higher is better.

  You et al., 2021, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning",
  ICML, with the fixed-point solver of You et al., 2022, "Ranking and Tuning Pre-trained
  Models: A New Paradigm for Exploiting Model Hubs", JMLR (`_fit_fixed_point` of the official
  code, https://github.com/thuml/LogME).

  For each class c, the one-vs-rest target y in {0, 1}^N is modelled as y = F m + noise with
  prior m ~ N(0, alpha^-1 I_D) and noise ~ N(0, beta^-1 I_N). With the thin SVD F = U S V^T
  (for N > D obtained, as the official code does, from the eigendecomposition F^T F = V S^2 V^T
  and U = F V / S, keeping the singular values above 1e-10), sigma = S^2 and x = U^T y, starting
  from alpha = beta = 1 and for at most 11 iterations:

    t = alpha / beta
    gamma = sum sigma / (sigma + t)
    m^T m = sum sigma x^2 / (t + sigma)^2                      (m = V S x / (t + sigma))
    ||y - F m||^2 = sum x^2 / (1 + sigma / t)^2 + (||y||^2 - ||x||^2)
    alpha = gamma / (m^T m + 1e-5),  beta = (N - gamma) / (||y - F m||^2 + 1e-5)
    stop once |alpha / beta - t| / t <= 1e-3.

  The last term of the residual is the part of y outside F's column space. The evidence is

    [D/2 log alpha + N/2 log beta - N/2 log 2 pi - beta/2 ||y - F m||^2 - alpha/2 m^T m
     - 1/2 log det(alpha I_D + beta F^T F)] / N,

  taken, as in the official code, with the final alpha and beta and the m of the last
  iteration; LogME is its mean over classes.

  D > N (the official code's dual form). thuml/LogME's `_fit_fixed_point` takes the thin SVD of F,
  whose N singular values are those of the N x N matrix F F^T, and sums log(alpha + beta sigma)
  over these N values only. The D x D matrix alpha I_D + beta F^T F also has D - N eigenvalues
  equal to alpha, so the official log det lacks (D - N) log alpha while the prior term D/2 log
  alpha keeps all D dimensions (thuml/LogME issue #23, PR #24; LogME.py at thuml/LogME 56551ca,
  which `bench/reference.py` transcribes, does not count them, and published LogME numbers come
  from that code). The official value is therefore not the evidence of the model: it exceeds it by
  (D - N) / (2N) log alpha, and alpha grows as the square of the feature scale, so rescaling F by
  c adds about (D - N) / N log c to it while the true evidence stays put. It can be positive where
  the true evidence is negative (40 clips of 128-d clustered features at scale 0.01,
  `tests/test_logme_dual.py`: 1.393 against -0.263).

  `logme` returns the official value, because that is what papers report and compare against
  (768-d embeddings of a few hundred clips are common, and a LogME that disagreed with the
  official code there would not be comparable with published rankings). `logme_exact` counts the
  missing eigenvalues as alpha and returns the true maximum evidence (the papers' formula with the
  D x D matrix A = alpha I_D + beta F^T F in log |A|). For N >= D the two are the same number;
  both then equal the official code on full-rank features. (On rank-deficient N > D features,
  directions below the eigenvalue threshold count as alpha in both forms; the official code keeps
  any singular value above 1e-10, where log(alpha + beta sigma) is log alpha to rounding, and
  leaves out only those below, in practice exact zeros such as dead units.)

  Float32 (x64 off) agrees with float64 to ~1e-5 relative on well-conditioned features
  (observed <= 2e-5 on the test data, including D > N): for N > D the Gram matrix squares the
  condition number, and eigenvalues below D * eps * max(sigma) are treated as zero (their
  directions move into the out-of-span residual, which leaves the evidence unchanged to first
  order). Ill-conditioned features lose more; use x64 for them.

  Args:
    features: (N, D) embeddings, finite; N < D is fine.
    labels: (N,) integers, any values, at least 2 classes.

  Returns:
    A 0-d array.
  """
  features, labels, classes, _ = _checks.check_features(features, labels)
  return logme_core(features, labels, num_classes=classes.size)


def logme_exact(features, labels) -> jax.Array:
  """LogME as the exact maximum evidence, also for D > N. Higher is better.

  `logme` with log det(alpha I_D + beta F^T F) over all D eigenvalues: for D > N the D - N
  that the official code leaves out count as alpha (thuml/LogME issue #23, PR #24). Equal to
  `logme` for N >= D. Unlike `logme` for D > N, invariant (up to the 1e-5 guards of the
  fixed point) to rescaling the features, so it compares layers or models of different
  feature scales on equal terms; its numbers are not those of published LogME tables. See
  `logme` for the derivation, references and float32 error.

  Args:
    features: (N, D) embeddings, finite; N < D is fine.
    labels: (N,) integers, any values, at least 2 classes.

  Returns:
    A 0-d array.
  """
  features, labels, classes, _ = _checks.check_features(features, labels)
  return logme_core(features, labels, num_classes=classes.size, exact=True)


def logme_regression(features, targets) -> jax.Array:
  """LogME for continuous or multi-label targets (the official `regression=True`). Higher is better.

  The same evidence as `logme`, with each column of `targets` as one target y (a multi-hot
  label matrix gives one binary target per class, i.e. one-vs-rest for multi-label data), and
  the mean over columns. As `logme`, the official value for D > N (log det over the N
  singular values only); `logme_regression_exact` gives the exact evidence. References and
  float32 error as `logme`.

  Args:
    features: (N, D) embeddings, finite.
    targets: (N,) or (N, K) numbers, finite; no column may be constant (a constant target says
      nothing about the features, and a class absent from a multi-hot matrix is one).

  Returns:
    A 0-d array.
  """
  return logme_regression_core(*_check_targets(features, targets))


def logme_regression_exact(features, targets) -> jax.Array:
  """`logme_regression` as the exact evidence for D > N (as `logme_exact`). Higher is better.

  Args:
    features: (N, D) embeddings, finite.
    targets: (N,) or (N, K) numbers, finite, no constant column.

  Returns:
    A 0-d array.
  """
  return logme_regression_core(*_check_targets(features, targets), exact=True)


def _check_targets(features, targets):
  """(features, (N, K) targets), checked as `logme_regression` documents."""
  features = _checks.check_matrix(features, "features")
  targets = np.asarray(targets)
  if targets.ndim == 1:
    targets = targets[:, None]
  targets = _checks.check_matrix(targets, "targets")
  if targets.shape[0] != features.shape[0]:
    raise UserError(f"features has {features.shape[0]} rows but targets has {targets.shape[0]}")
  if not np.ptp(features, axis=0).any():
    raise UserError("features are identical for every sample, so they carry no information "
                    "about the targets (is the feature extractor broken?)")
  constant = np.ptp(targets, axis=0) == 0
  if constant.any():
    raise UserError(f"{int(constant.sum())} target column(s) are constant (e.g. column "
                    f"{int(np.argmax(constant))}): a class with no positive, or none negative? "
                    "drop those columns")
  return features, targets


@functools.partial(jax.jit, static_argnames=("num_classes", "exact"))
def logme_core(features: jax.Array, labels: jax.Array, *, num_classes: int,
               exact: bool = False) -> jax.Array:
  """`logme` (or with `exact`, `logme_exact`) on contiguous labels in [0, num_classes)."""
  num_samples, dim = features.shape
  if num_samples > dim:
    # F^T Y for one-hot Y is the per-class sum of features; ||y_c||^2 is the class count.
    fty = jax.ops.segment_sum(features, labels, num_classes).T
    yty = jax.ops.segment_sum(jnp.ones_like(labels, features.dtype), labels, num_classes)
    return logme_from_moments(gram(features), fty, yty, num_samples=num_samples, exact=exact)
  return _logme_svd(features, jax.nn.one_hot(labels, num_classes, dtype=features.dtype),
                    exact=exact)


@functools.partial(jax.jit, static_argnames=("exact",))
def logme_regression_core(features: jax.Array, targets: jax.Array, *,
                          exact: bool = False) -> jax.Array:
  """`logme_regression` (or with `exact`, the exact form) on a checked (N, K) target matrix."""
  num_samples, dim = features.shape
  if num_samples > dim:
    fty = jnp.matmul(features.T, targets, precision=_checks.HIGHEST)
    return logme_from_moments(gram(features), fty, jnp.sum(jnp.square(targets), axis=0),
                              num_samples=num_samples, exact=exact)
  return _logme_svd(features, targets, exact=exact)


def gram(features: jax.Array) -> jax.Array:
  """F^T F at full precision."""
  return jnp.matmul(features.T, features, precision=_checks.HIGHEST)


@functools.partial(jax.jit, static_argnames=("num_samples", "exact"))
def logme_from_moments(gram_matrix: jax.Array, fty: jax.Array, yty: jax.Array, *,
                       num_samples: int, exact: bool = False) -> jax.Array:
  """LogME from its sufficient statistics: F^T F (D, D), F^T Y (D, K), ||y_k||^2 (K,) and N.

  The Gram route of the official code (`truncated_svd`): F^T F = V diag(sigma) V^T, so that
  x = U^T y = V^T F^T y / sqrt(sigma) without forming U. Meant for N > D, where `exact` changes
  nothing. For N <= D the Gram matrix has at most N nonzero eigenvalues, so only the top N are
  kept, as the thin SVD of F would give them (`logme` takes that SVD, which is more accurate;
  `streaming.py` refuses N <= D); then `exact` selects the exact evidence over the official
  value as in `logme_exact`.
  """
  dim = gram_matrix.shape[0]
  sigma, v = jnp.linalg.eigh(gram_matrix, symmetrize_input=False)
  if num_samples < dim:
    # eigh sorts ascending; the bottom D - N are zero up to rounding (the null space of F).
    sigma, v = sigma[dim - num_samples:], v[:, dim - num_samples:]
  # The official code keeps singular values above 1e-10 (sigma > 1e-20); rounding noise of the
  # eigensolver is ~eps * max(sigma), so anything below D * eps * max is noise as well.
  eps = jnp.finfo(sigma.dtype).eps
  keep = sigma > jnp.maximum(1e-20, dim * eps * sigma[-1])
  projected = jnp.matmul(v.T, fty, precision=_checks.HIGHEST)  # sqrt(sigma) * x, (D, K)
  x2 = jnp.where(keep[:, None], jnp.square(projected) / jnp.where(keep, sigma, 1)[:, None], 0)
  sigma = jnp.where(keep, sigma, 0)
  outside = jnp.maximum(yty - jnp.sum(x2, axis=0), 0)  # ||y||^2 - ||x||^2, >= 0 in exact math
  evidence = jax.vmap(
      functools.partial(_evidence, sigma=sigma, num_samples=num_samples, dim=dim, exact=exact),
      in_axes=(1, 0))(x2, outside)
  return jnp.mean(evidence)


def _logme_svd(features: jax.Array, targets: jax.Array, *, exact: bool) -> jax.Array:
  """The thin-SVD route, for N <= D (the official code's other branch)."""
  num_samples, dim = features.shape
  u, s, _ = jnp.linalg.svd(features, full_matrices=False)
  projected = jnp.matmul(u.T, targets, precision=_checks.HIGHEST)  # x for every target, (k, K)
  # ||y - U U^T y||^2 straight from the residual vector rather than ||y||^2 - ||x||^2, which
  # cancels in float32 when y lies almost inside the column space.
  outside = jnp.sum(
      jnp.square(targets - jnp.matmul(u, projected, precision=_checks.HIGHEST)), axis=0)
  evidence = jax.vmap(
      functools.partial(_evidence, sigma=jnp.square(s), num_samples=num_samples, dim=dim,
                        exact=exact),
      in_axes=(1, 0))(jnp.square(projected), outside)
  return jnp.mean(evidence)


def _fixed_point(x2: jax.Array, outside: jax.Array, *, sigma: jax.Array, num_samples: int):
  """The official fixed-point iteration for one target: final (alpha, beta, m^T m, residual).

  Entries of sigma may be 0 (dropped directions): they then add nothing to gamma, m^T m or the
  in-span residual, and count as alpha in log det (in both forms of `_evidence`).
  """
  n = jnp.asarray(num_samples, sigma.dtype)

  def step(_, state):
    alpha, beta, m2, res2, done = state
    t = alpha / beta
    gamma = jnp.sum(sigma / (sigma + t))
    new_m2 = jnp.sum(sigma * x2 / jnp.square(t + sigma))
    new_res2 = jnp.sum(x2 / jnp.square(1 + sigma / t)) + outside
    new_alpha = gamma / (new_m2 + EPSILON)
    new_beta = (n - gamma) / (new_res2 + EPSILON)
    converged = jnp.abs(new_alpha / new_beta - t) / t <= TOLERANCE
    # Once converged the state freezes, which is the official loop's `break` with static shapes.
    keep = lambda old, new: jnp.where(done, old, new)
    return (keep(alpha, new_alpha), keep(beta, new_beta), keep(m2, new_m2),
            keep(res2, new_res2), done | converged)

  one = jnp.ones((), sigma.dtype)
  alpha, beta, m2, res2, _ = jax.lax.fori_loop(
      0, MAX_ITERATIONS, step, (one, one, 0 * one, 0 * one, jnp.zeros((), bool)))
  return alpha, beta, m2, res2


def _evidence(x2: jax.Array, outside: jax.Array, *, sigma: jax.Array, num_samples: int,
              dim: int, exact: bool) -> jax.Array:
  """Fixed-point maximum evidence / N for one target, given x^2 = (U^T y)^2 and sigma = s^2.

  sigma has k = min(N, D) entries. log det(alpha I_D + beta F^T F) has k eigenvalues
  alpha + beta sigma and D - k equal to alpha: `exact` counts those, the official code (and
  `exact=False`) does not (see `logme`).
  """
  n = jnp.asarray(num_samples, sigma.dtype)
  alpha, beta, m2, res2 = _fixed_point(x2, outside, sigma=sigma, num_samples=num_samples)
  log_det = jnp.sum(jnp.log(alpha + beta * sigma))
  if exact:
    log_det += (dim - sigma.shape[0]) * jnp.log(alpha)
  evidence = (dim / 2 * jnp.log(alpha) + n / 2 * jnp.log(beta) - 0.5 * log_det
              - beta / 2 * res2 - alpha / 2 * m2 - n / 2 * jnp.log(2 * jnp.pi))
  return evidence / n


def logme_heldout(train_features, train_labels, val_features, val_labels) -> jax.Array:
  """Validation-aware LogME: held-out predictive log-likelihood of LogME's model. Higher is better.

  A variant of this project (not from the LogME papers), for the seed paper's ideal measure
  that uses both training and validation data. For each class c, the Bayesian linear model of
  `logme` is fitted on the training split: alpha, beta by the same fixed point, posterior
  A = alpha I_D + beta F^T F, mean m = beta A^-1 F^T y. Each validation embedding x then has
  the predictive density N(y_c(x); x^T m, 1/beta + x^T A^-1 x), and the score is the mean log
  density over validation samples and classes. Evidence rewards features that fit the training
  labels cheaply; this rewards features whose fit carries over to unseen clips.

  Computed in the eigenbasis of the training Gram matrix (eigenvalues below D * eps * max are
  taken as 0, i.e. the prior alone). Float32 agrees with float64 to ~1e-5 relative on
  well-conditioned features.

  Args:
    train_features: (N, D) embeddings of the training split.
    train_labels: (N,) integers, at least 2 classes.
    val_features: (M, D) embeddings of the validation split.
    val_labels: (M,) integers, each a class that occurs in `train_labels`.

  Returns:
    A 0-d array.
  """
  train_features, train_labels, classes, _ = _checks.check_features(train_features, train_labels)
  val_features = _checks.check_matrix(val_features, "val_features")
  if val_features.shape[1] != train_features.shape[1]:
    raise UserError(f"val_features has {val_features.shape[1]} dims, train_features "
                    f"{train_features.shape[1]}")
  val = np.asarray(val_labels)
  if val.ndim != 1 or val.dtype.kind not in "iu" or val.shape[0] != val_features.shape[0]:
    raise UserError(f"val_labels must be {val_features.shape[0]} integers, got shape {val.shape} "
                    f"dtype {val.dtype}")
  unseen = np.setdiff1d(val, classes)
  if unseen.size:
    raise UserError(f"val_labels has {unseen.size} class(es) absent from the training labels: "
                    f"{unseen[:10].tolist()}")
  return logme_heldout_core(train_features, train_labels, val_features,
                            np.searchsorted(classes, val).astype(np.int32),
                            num_classes=classes.size)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def logme_heldout_core(features, labels, val_features, val_labels, *, num_classes: int):
  """`logme_heldout` on contiguous labels."""
  num_samples, dim = features.shape
  fty = jax.ops.segment_sum(features, labels, num_classes).T  # (D, C)
  yty = jax.ops.segment_sum(jnp.ones_like(labels, features.dtype), labels, num_classes)
  sigma, v = jnp.linalg.eigh(gram(features), symmetrize_input=False)
  keep = sigma > jnp.maximum(1e-20, dim * jnp.finfo(sigma.dtype).eps * sigma[-1])
  projected = jnp.where(keep[:, None], jnp.matmul(v.T, fty, precision=_checks.HIGHEST), 0)
  x2 = jnp.square(projected) / jnp.where(keep, sigma, 1)[:, None]
  sigma = jnp.where(keep, sigma, 0)
  outside = jnp.maximum(yty - jnp.sum(x2, axis=0), 0)
  alpha, beta, _, _ = jax.vmap(functools.partial(_fixed_point, sigma=sigma,
                                                 num_samples=num_samples),
                               in_axes=(1, 0))(x2, outside)  # (C,) each
  # In the eigenbasis: m = V diag(1 / (t + sigma)) V^T F^T y and
  # A^-1 = V diag(1 / (alpha + beta sigma)) V^T.
  weights = projected / (alpha / beta + sigma[:, None])  # (D, C)
  z = jnp.matmul(val_features, v, precision=_checks.HIGHEST)  # (M, D)
  mean = jnp.matmul(z, weights, precision=_checks.HIGHEST)  # (M, C)
  var = 1 / beta + jnp.matmul(jnp.square(z), 1 / (alpha + beta * sigma[:, None]),
                              precision=_checks.HIGHEST)
  targets = jax.nn.one_hot(val_labels, num_classes, dtype=features.dtype)
  log_density = -0.5 * (jnp.log(2 * jnp.pi * var) + jnp.square(targets - mean) / var)
  return jnp.mean(log_density)
