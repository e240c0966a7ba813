"""GBC: Gaussian Bhattacharyya coefficient, the overlap of per-class Gaussians."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from audiotl_jax.errors import UserError, unknown_name
from audiotl_jax.scores import _checks

COVARIANCES = ("diagonal", "spherical")
PCA_DIM = 64  # The paper reduces features to 64 dimensions with PCA before fitting Gaussians.


def gbc(features, labels, *, covariance: str = "diagonal",
        pca_dim: int | None = None) -> jax.Array:
  """GBC: minus the summed Bhattacharyya coefficients between class Gaussians. Higher is better.

  Pándy et al., 2022, "Transferability Estimation using Bhattacharyya Class Separability",
  CVPR. Each class c is fitted with a Gaussian N(mu_c, Sigma_c): mean mu_c and the population
  variances s_c (1/n_c normalisation, as the reference code's `reduce_variance`), either per
  dimension (`diagonal`, Sigma_c = diag(s_c)) or their mean over dimensions (`spherical`,
  Sigma_c = mean(s_c) I_D). For each ordered pair c != c', with S = (Sigma_c + Sigma_c') / 2,

    D_B = 1/8 (mu_c - mu_c')^T S^-1 (mu_c - mu_c')
          + 1/2 log(det S / sqrt(det Sigma_c det Sigma_c')),
    GBC = - sum_{c != c'} exp(-D_B).

  GBC is <= 0; 0 means no overlap between any two classes. The spherical log-det term is that
  of the D-dimensional Gaussian (D log of the variances); the reference code takes the scalar
  variance's log once, i.e. 1/D of this term. With `pca_dim`, features are first centred and
  projected onto their top `pca_dim` principal directions (the paper's pipeline uses 64;
  `PCA_DIM`); GBC does not depend on the signs of the principal directions.

  Float32 (x64 off) agrees with float64 to ~1e-5 relative (observed <= 2e-6 on the test data).

  Args:
    features: (N, D) embeddings, finite; N < D is fine.
    labels: (N,) integers, any values; at least 2 classes, each with at least 2 samples and,
      for `diagonal`, no feature constant within one class but not in all (its variance there
      is 0, so D_B is infinite). Features constant over all samples (dead units; variance
      <= D * eps * the largest) are dropped: their Bhattacharyya factor is 1 in the limit.
    covariance: "diagonal" or "spherical".
    pca_dim: None, or the number of principal components to keep (<= min(N, D)).

  Returns:
    A 0-d array.
  """
  if covariance not in COVARIANCES:
    raise unknown_name("gbc covariance", covariance, COVARIANCES)
  features, labels, classes, counts = _checks.check_features(features, labels)
  _checks.require_two_per_class(classes, counts, "gbc")
  if pca_dim is not None:
    if not 1 <= pca_dim <= min(features.shape):
      raise UserError(f"gbc: pca_dim must be in [1, min(N, D) = {min(features.shape)}], got "
                      f"{pca_dim}")
    features = np.asarray(pca_project(features, pca_dim=pca_dim))
  # A feature constant over the whole dataset (a dead unit, or a principal direction beyond the
  # rank) has the same degenerate Gaussian in every class; its Bhattacharyya factor tends to 1
  # (no separation), so it is left out.
  features = features[:, active_features(features.var(axis=0))]
  means, variances = class_moments(features, labels, num_classes=classes.size)
  check_variances(np.asarray(means), np.asarray(variances), classes, covariance)
  return gbc_from_moments(means, variances, spherical=covariance == "spherical")


def active_features(spread) -> np.ndarray:
  """Features whose overall variance is above rounding noise: > D * eps * the largest."""
  spread = np.asarray(spread)
  return spread > spread.max() * spread.size * np.finfo(spread.dtype).eps


@functools.partial(jax.jit, static_argnames=("pca_dim",))
def pca_project(features: jax.Array, *, pca_dim: int) -> jax.Array:
  """Centred features on their top `pca_dim` principal directions (eigh of the covariance)."""
  centered = features - jnp.mean(features, axis=0)
  return jnp.matmul(centered, principal_directions(
      jnp.matmul(centered.T, centered, precision=_checks.HIGHEST), pca_dim=pca_dim),
      precision=_checks.HIGHEST)


def principal_directions(scatter: jax.Array, *, pca_dim: int) -> jax.Array:
  """(D, pca_dim) eigenvectors of a scatter matrix, largest eigenvalue first."""
  _, v = jnp.linalg.eigh(scatter)
  return v[:, ::-1][:, :pca_dim]


@functools.partial(jax.jit, static_argnames=("num_classes",))
def class_moments(features, labels, *, num_classes: int):
  """Per-class means and population variances, (C, D) each (two-pass, so no cancellation)."""
  counts = jax.ops.segment_sum(jnp.ones_like(labels, features.dtype), labels, num_classes)
  means = jax.ops.segment_sum(features, labels, num_classes) / counts[:, None]
  squares = jax.ops.segment_sum(jnp.square(features - means[labels]), labels, num_classes)
  return means, squares / counts[:, None]


def check_variances(means: np.ndarray, variances: np.ndarray, classes: np.ndarray,
                    covariance: str) -> None:
  """A zero variance makes a Gaussian degenerate (log det = -inf): refuse it by name.

  "Zero" is up to rounding: a constant feature's mean is computed as sum * (1 / n), which can
  be off by an ulp, leaving a variance of ~(eps * |mean|)^2 rather than 0.
  """
  variances = np.where(variances <= np.square(8 * np.finfo(variances.dtype).eps * np.abs(means)),
                       0, variances)
  if covariance == "spherical":
    dead = variances.mean(axis=1) <= 0
    if dead.any():
      raise UserError(f"gbc: every feature is constant within class {classes[np.argmax(dead)]}")
    return
  dead = variances <= 0
  if dead.any():
    c, d = np.argwhere(dead)[0]
    raise UserError(f"gbc (diagonal): {int(dead.sum())} (class, feature) pairs have zero "
                    f"variance, e.g. feature {d} is constant within class {classes[c]}; use "
                    "pca_dim (or covariance='spherical')")


@functools.partial(jax.jit, static_argnames=("spherical",))
def gbc_from_moments(means: jax.Array, variances: jax.Array, *, spherical: bool) -> jax.Array:
  """GBC from per-class means and variances (C, D)."""
  if spherical:
    variances = jnp.broadcast_to(jnp.mean(variances, axis=1, keepdims=True), means.shape)
  log_var = jnp.sum(jnp.log(variances), axis=1)  # log det Sigma_c

  def row(args):
    mu, var, log_det = args
    avg = (var + variances) / 2  # S for (c, every c'), (C, D)
    distance = (jnp.sum(jnp.square(mu - means) / avg, axis=1) / 8
                + (jnp.sum(jnp.log(avg), axis=1) - (log_det + log_var) / 2) / 2)
    return jnp.exp(-distance)

  coefficients = jax.lax.map(row, (means, variances, log_var))  # (C, C), diagonal is exp(0)=1
  # Masked rather than subtracting the trace: the off-diagonal sum is often far below C's ulp.
  return -jnp.sum(jnp.where(jnp.eye(means.shape[0], dtype=bool), 0, coefficients))
