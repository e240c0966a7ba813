"""Scores that read the source head: LEEP (its probabilities) and NCE (its hard predictions)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from audiotl_jax.scores import _checks


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
  probs, labels, classes = _checks.check_probs(probs, labels)
  return leep_core(probs, labels, num_classes=classes.size)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def leep_core(probs: jax.Array, labels: jax.Array, *, num_classes: int) -> jax.Array:
  """`leep` on contiguous labels in [0, num_classes)."""
  joint = leep_joint(probs, labels, num_classes=num_classes) / probs.shape[0]  # P(y, z)
  return jnp.mean(leep_log_likelihood(probs, labels, leep_conditional(joint)))


def leep_joint(probs: jax.Array, labels: jax.Array, *, num_classes: int) -> jax.Array:
  """sum_i theta(x_i)_z [y_i = y], (C, Z): N P(y, z), summable over chunks."""
  return jax.ops.segment_sum(probs, labels, num_classes)


def leep_conditional(joint: jax.Array) -> jax.Array:
  """P(y | z) from the (unnormalised) joint."""
  return joint / jnp.sum(joint, axis=0, keepdims=True)


def leep_log_likelihood(probs, labels, conditional) -> jax.Array:
  """log sum_z P(y_i | z) theta(x_i)_z for every row."""
  return jnp.log(jnp.sum(probs * conditional[labels], axis=1))


def nce(source_labels, labels) -> jax.Array:
  """NCE: negative conditional entropy of target given hard source labels. Higher is better.

  Tran, Nguyen and Hassner, 2019, "Transferability and Hardness of Supervised Classification
  Tasks", ICCV. With z_i the source head's hard prediction (argmax) for sample i and the
  empirical joint P(y, z) = #{i: y_i = y, z_i = z} / N,

    NCE = -H(Y | Z) = sum_{y, z} P(y, z) log (P(y, z) / P(z)),

  with 0 log 0 = 0. It is <= 0; 0 means the source prediction determines the target label.

  Float32 (x64 off) agrees with float64 to ~1e-6 relative (observed <= 5e-7 on the test data).

  Args:
    source_labels: (N,) integers, the source head's predicted classes (any values).
    labels: (N,) target integers, any values, at least 2 classes.

  Returns:
    A 0-d array.
  """
  source_labels = np.asarray(source_labels)
  labels, classes, _ = _checks.check_labels(labels, source_labels.shape[0], "source_labels")
  source, sources, _ = _checks.check_labels(source_labels, labels.shape[0], "source_labels",
                                            name="source_labels", min_classes=1)
  joint = nce_counts(source, labels, num_classes=classes.size, num_sources=sources.size)
  return nce_from_counts(joint.astype(_checks.float_dtype()))


@functools.partial(jax.jit, static_argnames=("num_classes", "num_sources"))
def nce_counts(source: jax.Array, labels: jax.Array, *, num_classes: int,
               num_sources: int) -> jax.Array:
  """Joint counts #{y_i = y, z_i = z}, (C, Z), summable over chunks."""
  return jax.ops.segment_sum(jnp.ones_like(labels), labels * num_sources + source,
                             num_classes * num_sources).reshape(num_classes, num_sources)


@jax.jit
def nce_from_counts(counts: jax.Array) -> jax.Array:
  """-H(Y | Z) from joint counts."""
  joint = counts / jnp.sum(counts)
  marginal = jnp.sum(joint, axis=0, keepdims=True)
  ratio = jnp.where(joint > 0, joint / jnp.where(marginal > 0, marginal, 1), 1)
  return jnp.sum(jnp.where(joint > 0, joint * jnp.log(ratio), 0))
