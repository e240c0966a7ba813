"""Train state, optimizer and durations.

The state is one pytree (params, BatchNorm statistics, optimizer state, step, rng) so the step can
be pure and donate it. The optimizer is AdamW with linear warm-up and cosine decay; transfer
strategies freeze leaves with a boolean mask over the parameter tree (`optax.multi_transform`), so
every strategy trains inside the one loop. Durations may be given in steps or epochs and are
resolved here, in one place.
"""
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from audiotl_jax.errors import UserError


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array


def resolve_steps(config, num_examples: int) -> int:
  """`total_steps` wins when set (> 0); else `num_epochs` over `num_examples`."""
  if config.get("total_steps", 0) and config.total_steps > 0:
    return int(config.total_steps)
  epochs = config.get("num_epochs", 0)
  if not epochs or epochs <= 0:
    raise UserError("set config key 'total_steps' or 'num_epochs' to a positive number")
  return max(1, int(round(epochs * num_examples / config.batch_size)))


def make_optimizer(optim, total_steps: int, trainable=None) -> optax.GradientTransformation:
  """AdamW + warm-up/cosine; leaves where `trainable` is False get zero updates."""
  warmup = int(optim.warmup_steps if optim.warmup_steps >= 1 else optim.warmup_steps * total_steps)
  warmup = min(warmup, max(total_steps - 1, 0))
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=optim.lr, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=optim.lr * optim.get("end_lr_factor", 0.0))
  tx = optax.chain(
      optax.clip_by_global_norm(optim.grad_clip) if optim.grad_clip else optax.identity(),
      optax.adamw(schedule, weight_decay=optim.weight_decay),
  )
  if trainable is None:
    return tx
  labels = jax.tree.map(lambda t: "train" if t else "freeze", trainable)
  return optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)


def variable_shapes(model, *, frames: int, n_mels: int) -> dict:
  """The shapes of `model`'s fresh variables ({"params", "batch_stats"?}), traced, not computed:
  what the strategy's masks and `transfer.transplant` are laid out against. Cached, so a stage
  and the loop asking about the same model trace it once (Flax modules hash by their fields)."""
  try:
    hash(model)
  except TypeError:  # a field that does not hash (a list in a config): traced each time
    return _variable_shapes.__wrapped__(model, frames, n_mels)
  return _variable_shapes(model, frames, n_mels)


@functools.lru_cache(maxsize=8)
def _variable_shapes(model, frames, n_mels):
  return jax.eval_shape(lambda: model.init({"params": host_key(0)}, jnp.zeros((1, frames, n_mels)),
                                           train=False))


def host_key(seed: int):
  """`jax.random.PRNGKey(seed)` made on the host: the same uint32 pair, without compiling and
  running a program for it (a run's first program pays JAX's start-up, on the critical path)."""
  if jax.config.jax_default_prng_impl == "threefry2x32" and 0 <= seed < 2**31:
    return np.asarray([0, seed], np.uint32)
  return jax.random.PRNGKey(seed)


def create(model, tx, mesh, *, frames: int, n_mels: int, seed: int, params=None,
           batch_stats=None):
  """The initial state, laid out on the mesh, in one program. Returns (state, shardings).

  `params`/`batch_stats` (fine-tuning from a checkpoint) are trees shaped like the model's
  (`transfer.transplant` over `variable_shapes`): a host array is kept, a `jax.ShapeDtypeStruct`
  leaf is initialised fresh (the new head, added adapters).
  """
  from audiotl_jax.train import mesh as mesh_lib  # Local: mesh_lib imports nothing from here.

  # Given leaves travel as arguments, not closure constants: a large model must not be baked
  # into the compiled init. Fresh leaves are None there (an empty pytree), filled inside.
  given_params, given_stats = _given(params), _given(batch_stats)

  def init(rng, given_params, given_stats):
    p_rng, s_rng = jax.random.split(rng)
    variables = model.init({"params": p_rng}, jnp.zeros((1, frames, n_mels)), train=False)
    p = _merge(given_params, variables["params"])
    s = _merge(given_stats, variables.get("batch_stats", {}))
    return TrainState(step=jnp.zeros((), jnp.int32), params=p, batch_stats=s,
                      opt_state=tx.init(p), rng=s_rng)

  return mesh_lib.create_sharded(init, mesh, host_key(seed), given_params, given_stats)


def _given(tree):
  if tree is None:
    return None
  return jax.tree.map(lambda x: None if isinstance(x, jax.ShapeDtypeStruct) else x, tree)


def _merge(given, fresh):
  if given is None:
    return fresh
  return jax.tree.map(lambda g, f: f if g is None else g, given, fresh,
                      is_leaf=lambda x: x is None)
