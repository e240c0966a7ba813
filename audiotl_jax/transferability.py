"""Transferability scores: rank pre-trained models by how well their features suit a target task.

Each score has two layers:
  * a host-side wrapper (`nc_score`, `logme`, `leep`) that refuses degenerate input with
    `UserError` and maps arbitrary integer labels to 0..C-1 with `np.unique`, and
  * a jitted core (`nc_score_core`, `logme_core`, `leep_core`) that takes contiguous labels and
    a static `num_classes`, for callers that already hold clean arrays (e.g. inside a jitted
    evaluation).

Arithmetic is in float64 when jax x64 is enabled (`jax.config.update('jax_enable_x64', True)`
or `with jax.enable_x64(True):`), else float32. Scores come back as 0-d jax arrays. Matmuls
request `Precision.HIGHEST` so that GPUs/TPUs do not round float32 operands to TF32/bf16.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from audiotl_jax.errors import UserError, unknown_name

_HIGHEST = jax.lax.Precision.HIGHEST

# The official LogME adds this to the denominators of the alpha and beta updates, so that a
# perfectly fitted target (zero residual) or a zero weight vector cannot divide by zero.
_LOGME_EPSILON = 1e-5
_LOGME_MAX_ITERATIONS = 11
_LOGME_TOLERANCE = 1e-3


def _float_dtype() -> np.dtype:
  """float64 under jax x64 (including the `jax.enable_x64` context), else float32."""
  return jax.dtypes.canonicalize_dtype(jnp.float64)


# ---------------------------------------------------------------------------------------------
# Host-side validation.


def _check_labels(labels, num_rows: int, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Contiguous int32 labels, the original class values and per-class counts, or a UserError."""
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise UserError(f"labels must be 1-D, got shape {labels.shape}")
  if labels.dtype.kind not in "iu":
    raise UserError(f"labels must be integers, got dtype {labels.dtype}")
  if labels.shape[0] != num_rows:
    raise UserError(f"{what} has {num_rows} rows but labels has {labels.shape[0]} entries")
  classes, contiguous, counts = np.unique(labels, return_inverse=True, return_counts=True)
  if classes.size < 2:
    raise UserError(f"need at least 2 classes to score transferability, got {classes.size} "
                    f"({classes.tolist()})")
  return contiguous.reshape(-1).astype(np.int32), classes, counts


def _check_matrix(x, what: str) -> np.ndarray:
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
  return x.astype(_float_dtype())


def _check_features(features, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  features = _check_matrix(features, "features")
  labels, classes, counts = _check_labels(labels, features.shape[0], "features")
  if not np.ptp(features, axis=0).any():
    raise UserError("features are identical for every sample, so they carry no information "
                    "about the labels (is the feature extractor broken?)")
  return features, labels, classes, counts


# ---------------------------------------------------------------------------------------------
# NC score.


def nc_score(features, labels) -> jax.Array:
  """Neural-collapse score: within-class spread over between-class separation. Lower is better.

  With class means mu_c, the score is

    mean_i ||f_i - mu_{y_i}||  /  mean_{c < c'} ||mu_c - mu_c'||,

  the mean Euclidean distance of each embedding to its class mean, divided by the mean
  Euclidean distance between the means of all unordered pairs of distinct classes. Features
  that have collapsed onto well separated class means (Papyan et al., 2020, "Prevalence of
  neural collapse during the terminal phase of deep learning training", PNAS) score low.

  Reference: "Pitfalls in Measuring Neural Transferability" (the seed paper of this project),
  which ranks audio models with this neural-collapse score.

  Float32 (x64 off) agrees with the float64 value to ~1e-7 relative (observed <= 2e-7 on the
  test data).

  Args:
    features: (N, D) embeddings, finite.
    labels: (N,) integers, any values; at least 2 classes, each with at least 2 samples (a
      single-sample class has zero spread by construction).

  Returns:
    A 0-d array.
  """
  features, labels, classes, counts = _check_features(features, labels)
  if (counts < 2).any():
    singles = classes[counts < 2]
    raise UserError(f"nc_score needs at least 2 samples per class; {singles.size} class(es) have "
                    f"only one: {singles[:10].tolist()}")
  return nc_score_core(features, labels, num_classes=classes.size)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def nc_score_core(features: jax.Array, labels: jax.Array, *, num_classes: int) -> jax.Array:
  """`nc_score` on contiguous labels in [0, num_classes), every class present."""
  counts = jax.ops.segment_sum(jnp.ones_like(labels, features.dtype), labels, num_classes)
  means = jax.ops.segment_sum(features, labels, num_classes) / counts[:, None]
  within = jnp.mean(jnp.linalg.norm(features - means[labels], axis=-1))
  # Row by row rather than through the Gram identity |a|^2 + |b|^2 - 2ab: class means often
  # share a large common offset (e.g. post-ReLU features), where that identity cancels
  # catastrophically in float32; one row at a time also keeps memory at C x D.
  distances = jax.lax.map(lambda mu: jnp.linalg.norm(means - mu, axis=-1), means)
  pairs = num_classes * (num_classes - 1) / 2
  between = jnp.sum(jnp.triu(distances, k=1)) / pairs
  return within / between


# ---------------------------------------------------------------------------------------------
# LogME.


def logme(features, labels) -> jax.Array:
  """LogME: mean per-class log marginal evidence of a Bayesian linear model. Higher is better.

  You et al., 2021, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning",
  ICML, with the fixed-point solver of You et al., 2022, "Ranking and Tuning Pre-trained
  Models: A New Paradigm for Exploiting Model Hubs", JMLR (`_fit_fixed_point` of the official
  code, https://github.com/thuml/LogME).

  For each class c, the one-vs-rest target y in {0, 1}^N is modelled as y = F m + noise with
  prior m ~ N(0, alpha^-1 I_D) and noise ~ N(0, beta^-1 I_N). With the thin SVD F = U S V^T,
  sigma = S^2 and x = U^T y, starting from alpha = beta = 1 and for at most 11 iterations:

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

  The official fixed-point code sums log(alpha + beta sigma) over the min(N, D) singular values
  only, which drops (D - N) log(alpha) from log det when N < D (thuml/LogME issue #23, fix in
  PR #24 acknowledged by the authors). Here the missing D - min(N, D) eigenvalues of the D x D
  matrix count as alpha, so N < D gives the true evidence (the ICML-version value); N >= D
  matches the official code exactly.

  Float32 (x64 off) agrees with float64 to ~1e-6 relative on well-conditioned features
  (observed <= 3e-6 on the test data, including D > N); ill-conditioned features lose more.

  Args:
    features: (N, D) embeddings, finite; N < D is fine.
    labels: (N,) integers, any values, at least 2 classes.

  Returns:
    A 0-d array.
  """
  features, labels, classes, _ = _check_features(features, labels)
  return logme_core(features, labels, num_classes=classes.size)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def logme_core(features: jax.Array, labels: jax.Array, *, num_classes: int) -> jax.Array:
  """`logme` on contiguous labels in [0, num_classes)."""
  num_samples, dim = features.shape
  # Thin SVD: k = min(N, D) singular values, whichever side is larger. (The official code
  # eigendecomposes F^T F when N > D for speed; the thin SVD gives the same U, s more
  # accurately and covers both branches.)
  u, s, _ = jnp.linalg.svd(features, full_matrices=False)
  sigma = jnp.square(s)
  targets = jax.nn.one_hot(labels, num_classes, dtype=features.dtype)  # (N, C)
  projected = jnp.matmul(u.T, targets, precision=_HIGHEST)  # x for every class, (k, C)
  # ||y - U U^T y||^2 straight from the residual vector rather than ||y||^2 - ||x||^2, which
  # cancels in float32 when y lies almost inside the column space.
  outside = jnp.sum(
      jnp.square(targets - jnp.matmul(u, projected, precision=_HIGHEST)), axis=0)  # (C,)
  evidence = jax.vmap(
      functools.partial(_logme_evidence, sigma=sigma, num_samples=num_samples, dim=dim),
      in_axes=(1, 0))(jnp.square(projected), outside)
  return jnp.mean(evidence)


def _logme_evidence(x2: jax.Array, outside: jax.Array, *, sigma: jax.Array, num_samples: int,
                    dim: int) -> jax.Array:
  """Fixed-point maximum evidence / N for one target, given x^2 = (U^T y)^2 and sigma = s^2."""
  n = jnp.asarray(num_samples, sigma.dtype)

  def step(_, state):
    alpha, beta, m2, res2, done = state
    t = alpha / beta
    gamma = jnp.sum(sigma / (sigma + t))
    new_m2 = jnp.sum(sigma * x2 / jnp.square(t + sigma))
    new_res2 = jnp.sum(x2 / jnp.square(1 + sigma / t)) + outside
    new_alpha = gamma / (new_m2 + _LOGME_EPSILON)
    new_beta = (n - gamma) / (new_res2 + _LOGME_EPSILON)
    converged = jnp.abs(new_alpha / new_beta - t) / t <= _LOGME_TOLERANCE
    # Once converged the state freezes, which is the official loop's `break` with static shapes.
    keep = lambda old, new: jnp.where(done, old, new)
    return (keep(alpha, new_alpha), keep(beta, new_beta), keep(m2, new_m2),
            keep(res2, new_res2), done | converged)

  one = jnp.ones((), sigma.dtype)
  alpha, beta, m2, res2, _ = jax.lax.fori_loop(
      0, _LOGME_MAX_ITERATIONS, step, (one, one, 0 * one, 0 * one, jnp.zeros((), bool)))
  # log det(alpha I_D + beta F^T F): k = len(sigma) eigenvalues alpha + beta sigma, and the other
  # D - k are alpha (see the docstring on why the official code's omission is not copied).
  log_det = jnp.sum(jnp.log(alpha + beta * sigma)) + (dim - sigma.shape[0]) * jnp.log(alpha)
  evidence = (dim / 2 * jnp.log(alpha) + n / 2 * jnp.log(beta) - 0.5 * log_det
              - beta / 2 * res2 - alpha / 2 * m2 - n / 2 * jnp.log(2 * jnp.pi))
  return evidence / n


# ---------------------------------------------------------------------------------------------
# LEEP.


def leep(probs, labels) -> jax.Array:
  """LEEP: log expected empirical prediction of the source head. Higher is better.

  Nguyen et al., 2020, "LEEP: A New Measure to Evaluate Transferability of Learned
  Representations", ICML. With source-head probabilities theta(x_i)_z over source classes z,

    P(y, z) = 1/N sum_i theta(x_i)_z [y_i = y],    P(y | z) = P(y, z) / P(z),
    LEEP = 1/N sum_i log sum_z P(y_i | z) theta(x_i)_z,

  the average log-likelihood of the empirical predictor that routes source predictions through
  the source-to-target conditional. It is <= 0.

  Float32 (x64 off) agrees with float64 to ~1e-7 relative (observed <= 2e-7 on the test data).

  Args:
    probs: (N, Z) source-head probabilities (not logits): finite, non-negative, rows summing
      to 1 within 1e-3, and every source class with some mass (P(z) > 0).
    labels: (N,) target integers, any values, at least 2 classes.

  Returns:
    A 0-d array.
  """
  probs = _check_matrix(probs, "probs")
  labels, classes, _ = _check_labels(labels, probs.shape[0], "probs")
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
  return leep_core(probs, labels, num_classes=classes.size)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def leep_core(probs: jax.Array, labels: jax.Array, *, num_classes: int) -> jax.Array:
  """`leep` on contiguous labels in [0, num_classes)."""
  targets = jax.nn.one_hot(labels, num_classes, dtype=probs.dtype)  # (N, C)
  joint = jnp.matmul(targets.T, probs, precision=_HIGHEST) / probs.shape[0]  # P(y, z), (C, Z)
  conditional = joint / jnp.sum(joint, axis=0, keepdims=True)  # P(y | z)
  expected = jnp.sum(probs * conditional[labels], axis=1)  # sum_z P(y_i | z) theta(x_i)_z
  return jnp.mean(jnp.log(expected))


# ---------------------------------------------------------------------------------------------
# Registry.

# name -> (score function, higher_is_better). nc_score and logme take (features, labels); leep
# takes (source-head probabilities, labels).
SCORES = {
    "nc_score": (nc_score, False),
    "logme": (logme, True),
    "leep": (leep, True),
}


def get_score(name: str):
  """(score function, higher_is_better) for a name in `SCORES`."""
  if name not in SCORES:
    raise unknown_name("score", name, SCORES)
  return SCORES[name]
