"""The model registry: `family` or `family:variant` names -> Flax modules.

Every model takes log-mel features (batch, frames, mel_bins), is called as
`model.apply(variables, x, train=..., mutable=[...])`, and returns `(logits, out)` where `out`
holds the named intermediates (`block1`..`blockN`, `pooled`, `embedding`, `logits`). Parameters
live only under the top-level names `block1`..`blockN`, `embedding` or `gru`, and `head` (plus a
family's stem, `stem_names()`: PANNs' `bn0`), which the fine-tuning code freezes by regex.
"""
import dataclasses
import math
from typing import Any, Mapping, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from audiotl_jax.errors import UserError, unknown_name
from audiotl_jax.models import ast, common, convnets, panns, vggish


class _Family(NamedTuple):
  cls: type
  variants: Mapping[str, Mapping[str, Any]]
  default_variant: str
  # (frames, mel bins) `describe_models` counts at: AST's position embeddings depend on it.
  default_input: tuple[int, int] = (100, 64)


# family -> how to build it; the order is the order `list_models` prints.
_FAMILIES = {
    **{c.FAMILY: _Family(c, c.VARIANTS, c.DEFAULT_VARIANT) for c in convnets.FAMILIES},
    ast.FAMILY: _Family(ast.Ast, ast.VARIANTS, ast.DEFAULT_VARIANT, ast.DEFAULT_INPUT),
    panns.FAMILY: _Family(panns.Panns, panns.VARIANTS, panns.DEFAULT_VARIANT),
    vggish.FAMILY: _Family(vggish.Vggish, vggish.VARIANTS, vggish.DEFAULT_VARIANT,
                           vggish.DEFAULT_INPUT),
}


def list_models() -> list[str]:
  """Every registered `family:variant`, in registry order."""
  return [f"{name}:{v}" for name, family in _FAMILIES.items() for v in family.variants]


def _fields(cls) -> list[str]:
  return [f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name")]


def get_model(name: str, *, num_classes: int, **overrides) -> nn.Module:
  """Builds `family` (default variant) or `family:variant`; `overrides` replace variant fields."""
  family, _, variant = name.strip().partition(":")
  if family not in _FAMILIES:
    raise unknown_name("model", name, list_models())
  cls, variants, default_variant, _ = _FAMILIES[family]
  config = common.decode_variant(family, variants, variant if variant else default_variant)
  known = _fields(cls)
  for key, value in overrides.items():
    if key == "num_classes" or key not in known:
      raise unknown_name(f"option for model {name!r}",
                         key, [k for k in known if k != "num_classes"])
    # Configs (YAML, ml_collections) hand sequences over as lists; module fields must be hashable.
    config[key] = tuple(value) if isinstance(value, list) else value
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
    raise UserError(f"model {name!r}: num_classes must be a positive integer, got {num_classes!r}")
  channels = config.get("channels", ())
  if "channels" in known and not channels or any(not isinstance(c, int) or c < 1 for c in channels):
    raise UserError(
        f"model {name!r}: channels must be a non-empty sequence of positive integers, "
        f"got {channels!r}")
  return cls(num_classes=num_classes, **config)


def count_params(params_tree: Any) -> int:
  """Number of scalars in a pytree of arrays or `jax.ShapeDtypeStruct`s."""
  return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params_tree))


def param_shapes(model: nn.Module, frames: int = 100, mel_bins: int = 64) -> dict:
  """The model's variables as `ShapeDtypeStruct`s, via `jax.eval_shape` (nothing is allocated)."""
  x = jax.ShapeDtypeStruct((1, frames, mel_bins), jnp.float32)
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)


def describe_models(num_classes: int, frames: int | None = None,
                    mel_bins: int | None = None) -> list[tuple[str, int]]:
  """(name, trainable parameter count) for every registered variant; batch_stats not counted.

  Counted at each family's usual input (`DEFAULT_INPUT`: AST's 1024 x 128 fbank, whose position
  embeddings depend on it; 100 x 64 otherwise) unless `frames`/`mel_bins` are given.
  """
  rows = []
  for name in list_models():
    f, m = _FAMILIES[name.partition(":")[0]].default_input
    shapes = param_shapes(get_model(name, num_classes=num_classes), frames or f, mel_bins or m)
    rows.append((name, count_params(shapes["params"])))
  return rows


__all__ = ["count_params", "describe_models", "get_model", "list_models", "param_shapes"]
