"""Train state, optimizer and durations.

The state is one pytree (params, BatchNorm statistics, optimizer state, step, rng) so the step can
be pure and donate it. The optimizer is AdamW with linear warm-up and cosine decay; transfer
strategies freeze leaves with a boolean mask over the parameter tree (`optax.multi_transform`), so
every strategy trains inside the one loop. Durations may be given in steps or epochs and are
resolved here, in one place.
"""
from typing import Any

import flax
import jax
import jax.numpy as jnp
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


def create(model, tx, mesh, *, frames: int, n_mels: int, seed: int, params=None,
           batch_stats=None):
  """The initial state, laid out on the mesh; `params`/`batch_stats` (host trees) replace the
  fresh ones when given (fine-tuning from a checkpoint). Returns (state, shardings)."""
  from audiotl_jax.train import mesh as mesh_lib  # Local: mesh_lib imports nothing from here.

  # Given trees travel as arguments, not closure constants: a large model must not be baked
  # into the compiled init.
  def init(rng, given_params, given_stats):
    p_rng, s_rng = jax.random.split(rng)
    variables = model.init({"params": p_rng}, jnp.zeros((1, frames, n_mels)), train=False)
    p = variables["params"] if given_params is None else given_params
    s = variables.get("batch_stats", {}) if given_stats is None else given_stats
    return TrainState(step=jnp.zeros((), jnp.int32), params=p, batch_stats=s,
                      opt_state=tx.init(p), rng=s_rng)

  return mesh_lib.create_sharded(init, mesh, jax.random.PRNGKey(seed), params, batch_stats)
