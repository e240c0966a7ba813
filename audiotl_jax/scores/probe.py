"""A linear probe: multinomial logistic regression on frozen embeddings, trained on one split and
evaluated on another. The layer-wise transfer measure the scores are set against.

Features are standardised with the training split's mean and standard deviation; the weights
W (D, C) and bias b (C,) minimise

  mean_i CE(softmax(W^T x_i + b), y_i) + l2 / 2 * ||W||_F^2

by full-batch L-BFGS (optax) for a fixed number of steps from zero weights. The objective is
strictly convex and nothing is drawn at random (no initialisation, no minibatches), so the
result is deterministic: there is no seed to pass. scikit-learn's
`LogisticRegression(C=c)` minimises the same objective with l2 = 1 / (c * N) (tested). A binary
task is two classes (softmax over two logits, the same model as a sigmoid on their difference).

Memory: both splits are held whole (N x D floats), as the in-memory scores hold theirs.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from audiotl_jax.errors import UserError
from audiotl_jax.scores import _checks

L2 = 1e-3     # mild: standardised features of a few hundred dims rarely need more
STEPS = 200   # L-BFGS converges on these convex problems in well under this
KINDS = ("linear",)  # the probes `audiotl score` knows (config key `probe`)


def linear_probe(train_features, train_labels, test_features, test_labels, *, l2: float = L2,
                 steps: int = STEPS) -> dict[str, float]:
  """Trains on (train_features, train_labels), evaluates on the test split.

  Args:
    train_features: (N, D) embeddings, finite.
    train_labels: (N,) integers, any values, at least 2 classes.
    test_features: (M, D) embeddings of another split.
    test_labels: (M,) integers; a class absent from training counts as a miss.
    l2: weight of the L2 penalty on W (not on b), per training sample as above.
    steps: L-BFGS iterations.

  Returns:
    {"accuracy": fraction of test clips classified right} plus, for a two-class task,
    {"auroc": area under the ROC curve of P(second class)} (NaN when the test split lacks one
    of the two classes).
  """
  x = _checks.check_matrix(train_features, "train_features")
  labels, classes, _ = _checks.check_labels(train_labels, x.shape[0], "train_features",
                                            name="train_labels")
  x_test = _checks.check_matrix(test_features, "test_features")
  if x_test.shape[1] != x.shape[1]:
    raise UserError(f"test_features has {x_test.shape[1]} dims, train_features {x.shape[1]}")
  raw_test = np.asarray(test_labels)
  if raw_test.ndim != 1 or raw_test.dtype.kind not in "iu" or len(raw_test) != len(x_test):
    raise UserError(f"test_labels must be {len(x_test)} integers, got shape {raw_test.shape} "
                    f"dtype {raw_test.dtype}")
  # Classes never seen in training get -1, which no prediction equals.
  where = np.searchsorted(classes, raw_test).clip(0, classes.size - 1)
  y_test = np.where(classes[where] == raw_test, where, -1).astype(np.int32)
  probs = probe_core(x, labels, x_test, num_classes=classes.size, l2=float(l2),
                     steps=int(steps))
  probs = np.asarray(probs, np.float64)
  out = {"accuracy": float(np.mean(probs.argmax(axis=1) == y_test))}
  if classes.size == 2:
    out["auroc"] = auroc(probs[:, 1], y_test == 1, keep=y_test >= 0)
  return out


@functools.partial(jax.jit, static_argnames=("num_classes", "l2", "steps"))
def probe_core(x, labels, x_test, *, num_classes: int, l2: float, steps: int) -> jax.Array:
  """Test-split class probabilities (M, C) of the probe fitted on (x, labels in [0, C))."""
  mean = jnp.mean(x, axis=0)
  std = jnp.std(x, axis=0)
  std = jnp.where(std > 0, std, 1)  # a constant feature is 0 after centring; leave it there
  z, z_test = (x - mean) / std, (x_test - mean) / std
  targets = jax.nn.one_hot(labels, num_classes, dtype=z.dtype)

  def loss(params):
    logits = jnp.matmul(z, params["w"], precision=_checks.HIGHEST) + params["b"]
    ce = jnp.mean(optax.softmax_cross_entropy(logits, targets))
    return ce + 0.5 * l2 * jnp.sum(jnp.square(params["w"]))

  params = {"w": jnp.zeros((z.shape[1], num_classes), z.dtype),
            "b": jnp.zeros((num_classes,), z.dtype)}
  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss)

  def step(carry, _):
    params, state = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=loss)
    return (optax.apply_updates(params, updates), state), None

  (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
  logits = jnp.matmul(z_test, params["w"], precision=_checks.HIGHEST) + params["b"]
  return jax.nn.softmax(logits, axis=-1)


def auroc(scores, positive, *, keep=None) -> float:
  """Area under the ROC curve (ties count one half), NaN without both classes present."""
  scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
  if keep is not None:
    scores, positive = scores[keep], positive[keep]
  n_pos, n_neg = int(positive.sum()), int((~positive).sum())
  if not n_pos or not n_neg:
    return float("nan")
  return float(_auroc(jnp.asarray(scores, _checks.float_dtype()), jnp.asarray(positive)))


@jax.jit
def _auroc(scores, positive):
  # Mann-Whitney: the mean rank of the positives, with tied scores given their average rank.
  order = jnp.argsort(scores)
  sorted_scores = scores[order]
  first = jnp.searchsorted(sorted_scores, sorted_scores, side="left")
  last = jnp.searchsorted(sorted_scores, sorted_scores, side="right")
  ranks = jnp.zeros_like(scores).at[order].set((first + last + 1) / 2)
  n_pos = jnp.sum(positive)
  n_neg = positive.size - n_pos
  return (jnp.sum(jnp.where(positive, ranks, 0)) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
