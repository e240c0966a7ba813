"""The model registry: `family` or `family:variant` names -> Flax modules.

Every model takes log-mel features (batch, frames, mel_bins), is called as
`model.apply(variables, x, train=..., mutable=[...])`, and returns `(logits, out)` where `out`
holds the named intermediates (`block1`..`blockN`, `pooled`, `embedding`, `logits`). Parameters
live only under the top-level names `block1`..`blockN`, `embedding` or `gru`, and `head`, which
the fine-tuning code freezes by regex.
"""
import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from audiotl_jax.errors import UserError, unknown_name
from audiotl_jax.models import ast, cnn, crnn, dcase_cnn

# family -> (module class, module holding VARIANTS / DEFAULT_VARIANT / decode_variant).
_FAMILIES = {
    cnn.FAMILY: (cnn.Cnn, cnn),
    crnn.FAMILY: (crnn.Crnn, crnn),
    dcase_cnn.FAMILY: (dcase_cnn.DcaseCnn, dcase_cnn),
    ast.FAMILY: (ast.Ast, ast),
}


def list_models() -> list[str]:
  """Every registered `family:variant`, in registry order."""
  return [f"{family}:{v}" for family, (_, mod) in _FAMILIES.items() for v in mod.VARIANTS]


def _fields(cls) -> list[str]:
  return [f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name")]


def get_model(name: str, *, num_classes: int, **overrides) -> nn.Module:
  """Builds `family` (default variant) or `family:variant`; `overrides` replace variant fields."""
  family, _, variant = name.strip().partition(":")
  if family not in _FAMILIES:
    raise unknown_name("model", name, list_models())
  cls, mod = _FAMILIES[family]
  config = mod.decode_variant(variant if variant else mod.DEFAULT_VARIANT)
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
    mod = _FAMILIES[name.partition(":")[0]][1]
    f, m = getattr(mod, "DEFAULT_INPUT", (100, 64))
    shapes = param_shapes(get_model(name, num_classes=num_classes), frames or f, mel_bins or m)
    rows.append((name, count_params(shapes["params"])))
  return rows


__all__ = ["count_params", "describe_models", "get_model", "list_models", "param_shapes"]
