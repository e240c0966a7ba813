"""Classifiers fitted on frozen embeddings, for `audiotl probe` (the feature-extraction recipe):
logistic regression with its L2 weight chosen on a validation split, and a one-hidden-layer MLP
early-stopped on it. Both evaluate the test split once, with the choice the validation made.

The logistic fit is `probe.linear_probe` (full-batch L-BFGS, deterministic). The MLP trains
full-batch with Adam on standardised features, dropout on the hidden layer, and keeps the
parameters of the evaluation with the best validation accuracy (every `eval_every` steps), as a
fine-tuning keeps its best checkpoint.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from audiotl_jax.scores import probe as probe_lib


def select_l2(train, val, test, *, grid=(1e-4, 1e-3, 1e-2, 1e-1, 1.0)) -> dict:
  """Logistic regression: the L2 weight of `grid` with the best validation accuracy (ties: the
  stronger penalty), then the test split with it. `train`, `val`, `test`: (features, labels)."""
  if not grid:
    raise ValueError("the L2 grid is empty")
  on_val = {float(l2): probe_lib.linear_probe(*train, *val, l2=float(l2)) for l2 in grid}
  scored = [(m["accuracy"], l2) for l2, m in on_val.items()]
  _, best_l2 = max(scored, key=lambda t: (t[0], t[1]))
  val_metrics = on_val[best_l2]
  test_metrics = probe_lib.linear_probe(*train, *test, l2=best_l2)
  classes = len(np.unique(train[1]))
  return {"val": val_metrics, "test": test_metrics, "chosen": {"l2": best_l2,
          "val_accuracy_per_l2": {str(l2): acc for acc, l2 in scored}},
          "num_params": int(train[0].shape[1] * classes + classes)}


def mlp_probe(x, y, x_val, y_val, x_test, y_test, *, hidden: int = 256, steps: int = 500,
              lr: float = 1e-3, weight_decay: float = 1e-4, dropout: float = 0.2,
              eval_every: int = 25, seed: int = 0) -> dict:
  """A Dense(hidden) + ReLU + Dropout + Dense classifier, early-stopped on validation accuracy."""
  classes, y_idx = np.unique(np.asarray(y), return_inverse=True)

  def index(labels):  # a class unseen in training: -1, which no prediction equals
    where = np.searchsorted(classes, labels).clip(0, len(classes) - 1)
    return np.where(classes[where] == labels, where, -1).astype(np.int32)

  x = np.asarray(x, np.float32)
  mean, std = x.mean(0), x.std(0)
  std = np.where(std > 0, std, 1.0)
  z, z_val, z_test = ((np.asarray(a, np.float32) - mean) / std for a in (x, x_val, x_test))
  key = jax.random.PRNGKey(seed)
  k1, k2, key = jax.random.split(key, 3)
  d, c = z.shape[1], len(classes)
  params = {"w1": jax.random.normal(k1, (d, hidden)) * np.sqrt(2.0 / d),
            "b1": jnp.zeros(hidden), "w2": jax.random.normal(k2, (hidden, c)) * np.sqrt(1.0 / hidden),
            "b2": jnp.zeros(c)}
  tx = optax.adamw(lr, weight_decay=weight_decay)
  train_step = _make_step(tx, dropout)
  opt_state = tx.init(params)
  targets = jax.nn.one_hot(y_idx, c)
  yv, yt = index(np.asarray(y_val)), index(np.asarray(y_test))
  best = (-1.0, params, 0)
  for step in range(1, steps + 1):
    key, sub = jax.random.split(key)
    params, opt_state = train_step(params, opt_state, z, targets, sub)
    if step % eval_every == 0 or step == steps:
      acc = float(np.mean(np.asarray(_predict(params, z_val)).argmax(1) == yv))
      if acc > best[0]:
        best = (acc, params, step)
  _, params, best_step = best
  out = {}
  for split, (zz, yy) in (("val", (z_val, yv)), ("test", (z_test, yt))):
    probs = np.asarray(_predict(params, zz))
    metrics = {"accuracy": float(np.mean(probs.argmax(1) == yy))}
    if c == 2:
      metrics["auroc"] = probe_lib.auroc(probs[:, 1], yy == 1, keep=yy >= 0)
    out[split] = metrics
  return {**out, "chosen": {"step": best_step, "hidden": hidden},
          "num_params": int(d * hidden + hidden + hidden * c + c)}


def _predict(params, z):
  h = jax.nn.relu(z @ params["w1"] + params["b1"])
  return jax.nn.softmax(h @ params["w2"] + params["b2"], axis=-1)


def _make_step(tx, dropout: float):
  @jax.jit
  def step(params, opt_state, z, targets, key):
    def loss(p):
      h = jax.nn.relu(z @ p["w1"] + p["b1"])
      keep = jax.random.bernoulli(key, 1 - dropout, h.shape)
      h = jnp.where(keep, h / (1 - dropout), 0.0)
      return optax.softmax_cross_entropy(h @ p["w2"] + p["b2"], targets).mean()
    grads = jax.grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state
  return step
