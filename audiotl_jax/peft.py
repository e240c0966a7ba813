"""Transfer strategies as masks over the parameter tree.

A strategy says which parameters train and whether BatchNorm runs in training mode; the one
fine-tuning loop applies it through `optax.multi_transform` (frozen leaves get zero updates) and
by keeping frozen blocks' BatchNorm statistics. Parameters are matched by regular expressions over
their '/'-joined paths (`block1/Conv_0/kernel`), as big_vision freezes by name.

Strategies (a name, optionally `:arg`):
  linear      only the new head trains; the backbone runs in inference mode (a linear probe)
  full        everything trains
  partial:k   blocks 1..k are frozen (parameters and BatchNorm statistics); the rest trains
"""
import dataclasses
import re
from typing import Any, Callable

import flax
import jax

from audiotl_jax.errors import UserError, unknown_name


@dataclasses.dataclass(frozen=True)
class Strategy:
  name: str
  trainable: Any          # bool tree over params
  stats_trainable: Any    # bool tree over batch_stats
  model_train: bool       # BatchNorm in training mode?
  description: str


def path_str(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def mask_by_regex(tree, patterns: list[str]):
  """True where any pattern matches the leaf's path."""
  compiled = [re.compile(p) for p in patterns]
  return jax.tree_util.tree_map_with_path(
      lambda p, _: any(c.search(path_str(p)) for c in compiled), tree)


def _linear(arg, params, stats, block_names):
  if arg:
    raise UserError(f"strategy 'linear' takes no argument, got {arg!r}")
  return (mask_by_regex(params, [r"^head/"]), mask_by_regex(stats, [r"^head/"]), False,
          "linear probe: backbone frozen in inference mode, new head trains")


def _full(arg, params, stats, block_names):
  if arg:
    raise UserError(f"strategy 'full' takes no argument, got {arg!r}")
  everything = lambda tree: jax.tree.map(lambda _: True, tree)
  return everything(params), everything(stats), True, "full fine-tuning: every parameter trains"


def _partial(arg, params, stats, block_names):
  try:
    k = int(arg)
  except (TypeError, ValueError):
    raise UserError(f"strategy 'partial' needs the number of frozen blocks, e.g. 'partial:2'; "
                    f"got {arg!r}") from None
  if not 0 <= k <= len(block_names):
    raise UserError(f"strategy 'partial:{k}': the model has {len(block_names)} blocks "
                    f"({', '.join(block_names)})")
  frozen = [rf"^{re.escape(b)}/" for b in block_names[:k]]
  keep = lambda tree: jax.tree.map(lambda m: not m, mask_by_regex(tree, frozen) if frozen
                                   else jax.tree.map(lambda _: False, tree))
  return keep(params), keep(stats), True, f"partial: blocks 1..{k} frozen, the rest trains"


STRATEGIES: dict[str, Callable] = {"linear": _linear, "full": _full, "partial": _partial}


def make_strategy(spec: str, params, batch_stats, block_names) -> Strategy:
  name, _, arg = spec.partition(":")
  if name not in STRATEGIES:
    raise unknown_name("fine-tuning strategy", name, STRATEGIES)
  trainable, stats_trainable, model_train, description = STRATEGIES[name](
      arg or None, params, batch_stats, tuple(block_names))
  return Strategy(spec, trainable, stats_trainable, model_train, description)


def count_trainable(params, trainable) -> int:
  return int(sum(p.size for p, t in zip(jax.tree.leaves(params), jax.tree.leaves(trainable)) if t))


def transplant(source: dict, target: dict, *, skip: tuple[str, ...] = ("head",)) -> tuple[dict, list]:
  """Copies every leaf of `source` into `target` where path and shape agree, except `skip`.

  Returns the new tree and the list of target paths left at their fresh initialisation (the new
  head, and anything the pre-trained model did not have): printed at start so nothing is silent.
  """
  flat_src = flax.traverse_util.flatten_dict(flax.core.unfreeze(source), sep="/")
  flat_tgt = flax.traverse_util.flatten_dict(flax.core.unfreeze(target), sep="/")
  fresh = []
  for key, value in flat_tgt.items():
    if key.split("/")[0] in skip or key not in flat_src:
      fresh.append(key)
      continue
    if tuple(flat_src[key].shape) != tuple(value.shape):
      raise UserError(f"pre-trained parameter {key!r} has shape {tuple(flat_src[key].shape)}, "
                      f"the model needs {tuple(value.shape)}: is the checkpoint from another "
                      f"model or variant?")
    flat_tgt[key] = flat_src[key]
  return flax.traverse_util.unflatten_dict(flat_tgt, sep="/"), fresh
