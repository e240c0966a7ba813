"""Masks over a model's parameter tree and surgery on it, for the strategies of `strategies.py`.

Parameters are matched by regular expressions over their '/'-joined paths
(`block3/attn/lora_q/a/kernel`), as big_vision freezes by name; the one fine-tuning loop applies
the masks through `optax.multi_transform` and `stop_gradient`. `transplant` fills a model that
has the added modules from a checkpoint that has not.
"""
import dataclasses
import re
from typing import Any, Callable

import flax
import jax

from audiotl_jax.errors import UserError
from audiotl_jax.models.transfer import strategies


@dataclasses.dataclass(frozen=True)
class Strategy:
  """A plan applied to one model's trees: the masks the fine-tuning loop needs."""
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


def model_for(spec: str, model_name: str, *, num_classes: int, petl_config=None,
              **overrides):
  """(model with the modules `spec` adds, keyword arguments for `make_strategy`).

  Raises a `UserError` naming the supported strategies when `spec` does not fit the family.
  """
  # Local: the registry's model modules import this package, so a top-level import is a cycle.
  from audiotl_jax import models
  base = models.get_model(model_name, num_classes=num_classes, **overrides)
  family = model_name.strip().partition(":")[0]
  ctx = dict(family=family, width=int(base.embedding_dim),
             stem=tuple(getattr(base, "stem_names", tuple)()), petl_config=petl_config)
  p = strategies.plan(spec, family, width=ctx["width"], block_names=base.block_names(),
                      stem=ctx["stem"], petl_config=petl_config)
  petl = strategies.make_petl(p)
  if petl is None:
    return base, ctx
  return models.get_model(model_name, num_classes=num_classes, petl=petl, **overrides), ctx


def resize_leaf(key: str, value, shape: tuple):
  """`transplant`'s hook: AST position grids are resized to a new input length or stride."""
  if key.endswith("embedding/pos_embed") and len(shape) == 4 and value.ndim == 4:
    from audiotl_jax.models import ast  # Local: only AST checkpoints need it.
    return ast.resize_pos_embed(value, shape[1], shape[2])
  return None


def make_strategy(spec: str, params, batch_stats, block_names, *, family: str = "cnn",
                  width: int = 0, stem=(), petl_config=None) -> Strategy:
  """The masks of strategy `spec` over a model's `params` and `batch_stats`; the head trains.

  `family`, `width`, `stem` and `petl_config` are the context `model_for` returns with the model.
  """
  p = strategies.plan(spec, family, width=width, block_names=block_names, stem=stem,
                      petl_config=petl_config)
  o = strategies.options(petl_config)
  patterns = [r"^head/", *p.train]
  if o["petl_ast_compat"] and family == "ast" and not spec.startswith("bitfit"):
    patterns.append(r"^encoder_norm/")  # PETL_AST trains the final LayerNorm with its head.
  norms = {"auto": p.norms, "none": (), "all": ("norm1", "norm2")}[o["train_norms"]]
  if family == "ast" and norms:
    patterns.append(rf"^block\d+/({'|'.join(norms)})/")
  stats_patterns = [r"^head/", *p.train_stats] if p.model_train else []
  return Strategy(spec, mask_by_regex(params, patterns), mask_by_regex(batch_stats, stats_patterns),
                  p.model_train, p.description)


def count_trainable(params, trainable) -> int:
  return int(sum(p.size for p, t in zip(jax.tree.leaves(params), jax.tree.leaves(trainable)) if t))


def transplant(source: dict, target: dict, *, skip: tuple[str, ...] = ("head",),
               resize: Callable | None = None) -> tuple[dict, list]:
  """Copies every leaf of `source` into `target` where path and shape agree, except `skip`.

  `resize(key, value, target_shape)` may adapt a leaf whose shape differs (AST position
  embeddings for another input length); it returns None to refuse. Returns the new tree and the
  list of target paths left at their fresh initialisation (the new head, added adapters, anything
  the pre-trained model did not have): printed at start so nothing is silent.
  """
  flat_src = flax.traverse_util.flatten_dict(flax.core.unfreeze(source), sep="/")
  flat_tgt = flax.traverse_util.flatten_dict(flax.core.unfreeze(target), sep="/")
  fresh = []
  for key, value in flat_tgt.items():
    if key.split("/")[0] in skip or key not in flat_src:
      fresh.append(key)
      continue
    src = flat_src[key]
    if tuple(src.shape) != tuple(value.shape):
      adapted = resize(key, src, tuple(value.shape)) if resize else None
      if adapted is None:
        raise UserError(f"pre-trained parameter {key!r} has shape {tuple(src.shape)}, the model "
                        f"needs {tuple(value.shape)}: is the checkpoint from another model or "
                        f"variant?")
      src = adapted
    flat_tgt[key] = src
  return flax.traverse_util.unflatten_dict(flat_tgt, sep="/"), fresh
