"""Transfer strategies: added modules (a `Petl` the model is built with) plus masks over its tree.

A strategy says which modules the model gains, which parameters train, which BatchNorm statistics
may move and whether the model runs in training mode; the one fine-tuning loop applies the masks
through `optax.multi_transform` and `stop_gradient`. Parameters are matched by regular
expressions over their '/'-joined paths (`block3/attn/lora_q/a/kernel`), as big_vision freezes by
name. The head always trains.

Strategies (a name, optionally `:arg`; defaults from config block `petl`):
  linear            new head only; the backbone frozen in inference mode (a linear probe)
  mlp[:hidden]      feature extraction with a small MLP classifier (Dense + ReLU + Dense)
  full              everything trains
  partial:k         blocks 1..k (and for AST the patch embedding) frozen; the rest trains
  bitfit            biases only (Zaken et al. 2022). The CNN convs have no bias: there BitFit
                    trains BatchNorm shifts (and Dense/GRU biases) with statistics frozen
  conv_adapter[:r]  a convolutional adapter per block, width = channels / r (AST: Conformer-style)
  lora[:rank]       AST: low-rank updates of the `petl.lora_targets` projections (q and v)
  houlsby[:r]       AST: bottleneck adapters at attention and FFN, width = width / r
  pfeiffer[:r]      AST: one bottleneck adapter per block, at `petl.adapter_location`
  prompt[:n]        AST: n shallow prompt tokens; deep_prompt[:n]: n new ones at every block
  prefix[:n]        AST: n prefix vectors per block, half keys and half values

Trainable LayerNorms (`petl.train_norms`): "auto" trains what the PETL_AST code unfroze (a
Pfeiffer adapter's block norm, both norms for Houlsby, none otherwise), "none", or "all" (both
norms of every block). Counts include the head: LayerNorm + Dense for AST, or Dense plus the
trainable final encoder LayerNorm with `petl.petl_ast_compat`. For AST-base on 50 classes this
gives the PETL_AST counts: linear 39,986, lora:12 482,354, lora:6 261,170, pfeiffer:96 215,186,
houlsby:96 390,386, deep_prompt:25 270,386, prompt:25 59,186, prefix:24 261,170.
"""
import dataclasses
import re
from typing import Any, Callable

import flax
import jax

from audiotl_jax.errors import UserError, unknown_name
from audiotl_jax.models import petl as petl_lib

ALL_FAMILIES = None
CONV_FAMILIES = ("cnn", "crnn", "dcase_cnn")
NORMS = ("auto", "none", "all")
DEFAULTS = dict(lora_rank=12, lora_reduction=0.0, lora_alpha=0.0, lora_targets="q,v",
                reduction=64.0, adapter_mode="parallel", adapter_location="ffn",
                conv_reduction=8.0, conv_kernel=3, prompt_tokens=25, prefix_tokens=24,
                mlp_hidden=256, train_norms="auto", petl_ast_compat=False)


@dataclasses.dataclass(frozen=True)
class Strategy:
  name: str
  trainable: Any          # bool tree over params
  stats_trainable: Any    # bool tree over batch_stats
  model_train: bool       # BatchNorm in training mode?
  description: str


@dataclasses.dataclass(frozen=True)
class Plan:
  """What a strategy asks of the model and of the masks, before the model exists."""
  petl: dict              # `Petl` fields the model is built with
  train: tuple[str, ...]  # regexes of trainable parameters besides the head
  model_train: bool
  norms: tuple[str, ...]  # per-block LayerNorms "auto" trains
  description: str
  train_stats: tuple[str, ...] = ()


def path_str(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def mask_by_regex(tree, patterns: list[str]):
  """True where any pattern matches the leaf's path."""
  compiled = [re.compile(p) for p in patterns]
  return jax.tree_util.tree_map_with_path(
      lambda p, _: any(c.search(path_str(p)) for c in compiled), tree)


def _int_arg(name, arg, default):
  if arg is None:
    return int(default)
  try:
    value = int(arg)
  except ValueError:
    raise UserError(f"strategy {name!r} takes an integer argument, e.g. '{name}:{default}'; "
                    f"got {arg!r}") from None
  if value < 1:
    raise UserError(f"strategy '{name}:{arg}': the argument must be at least 1")
  return value


def _float_arg(name, arg, default):
  try:
    value = float(default if arg is None else arg)
  except ValueError:
    raise UserError(f"strategy {name!r} takes a number, e.g. '{name}:64'; got {arg!r}") from None
  if value <= 0:
    raise UserError(f"strategy '{name}:{arg}': the reduction rate must be positive")
  return value


def _no_arg(name, arg):
  if arg:
    raise UserError(f"strategy {name!r} takes no argument, got {arg!r}")


def _linear(arg, o, width, stem, blocks):
  _no_arg("linear", arg)
  return Plan({}, (), False, (), "linear probe: backbone frozen in inference mode, new head trains")


def _mlp(arg, o, width, stem, blocks):
  hidden = _int_arg("mlp", arg, o["mlp_hidden"])
  return Plan({"head_hidden": hidden}, (), False, (),
              f"feature extraction: backbone frozen, a new {hidden}-unit MLP classifier trains")


def _full(arg, o, width, stem, blocks):
  _no_arg("full", arg)
  return Plan({}, (r".",), True, (), "full fine-tuning: every parameter trains",
              train_stats=(r".",))


def _partial(arg, o, width, stem, blocks):
  try:
    k = int(arg)
  except (TypeError, ValueError):
    raise UserError(f"strategy 'partial' needs the number of frozen blocks, e.g. 'partial:2'; "
                    f"got {arg!r}") from None
  if not 0 <= k <= len(blocks):
    raise UserError(f"strategy 'partial:{k}': the model has {len(blocks)} blocks "
                    f"({', '.join(blocks)})")
  # Below a frozen block nothing can usefully train: the stem goes with block1.
  frozen = list(blocks[:k]) + (list(stem) if k else [])
  train = (rf"^(?!({'|'.join(map(re.escape, frozen))})/)",) if frozen else (r".",)
  return Plan({}, train, True, (), f"partial: blocks 1..{k} frozen, the rest trains",
              train_stats=train)


def _bitfit(arg, o, width, stem, blocks):
  _no_arg("bitfit", arg)
  # PETL_AST unfreezes the biases of Linear and LayerNorm layers only, not the patch conv's.
  pattern = r"^(?!embedding/).*bias$" if o["petl_ast_compat"] else r"bias$"
  return Plan({}, (pattern,), False, (),
              "BitFit: biases (and BatchNorm shifts) and the head train")


def _conv_adapter(arg, o, width, stem, blocks):
  r = _float_arg("conv_adapter", arg, o["conv_reduction"])
  return Plan({"conv_adapter_dim": petl_lib.bottleneck(width, r), "conv_reduction": r,
               "conv_kernel": int(o["conv_kernel"])},
              (r"/conv_adapter/", r"/adapter/"), False, (),
              f"convolutional adapters (reduction {r:g}) and the head train")


def _lora(arg, o, width, stem, blocks):
  compat = bool(o["petl_ast_compat"])
  if arg is None and float(o["lora_reduction"]) > 0:
    rank = petl_lib.bottleneck(width, float(o["lora_reduction"]))
  else:
    rank = _int_arg("lora", arg, o["lora_rank"])
  targets = tuple(t.strip() for t in str(o["lora_targets"]).split(",") if t.strip())
  alpha = float(o["lora_alpha"])
  if compat:  # PETL_AST: scale = alpha / reduction rate, with its defaults alpha 8 and rate 64.
    targets = ("q", "k")
    alpha = (alpha or 8.0) / (width / rank) * rank
  return Plan({"lora_rank": rank, "lora_targets": targets, "lora_alpha": alpha},
              (r"/lora_",), False, (),
              f"LoRA rank {rank} on {'+'.join(targets)}{' (one shared pair)' if compat else ''}")


def _adapter(kind):
  def make(arg, o, width, stem, blocks):
    r = _float_arg(kind, arg, o["reduction"])
    dim = petl_lib.bottleneck(width, r)
    location = o["adapter_location"]
    if kind == "houlsby":
      norms = ("norm1", "norm2")
    else:
      norms = ("norm2",) if location == "ffn" else ("norm1",)
    return Plan({"adapter": kind, "adapter_dim": dim, "adapter_mode": o["adapter_mode"],
                 "adapter_location": location}, (r"/adapter_(attn|ffn)/",), False, norms,
                f"{kind.capitalize()} bottleneck adapters ({o['adapter_mode']}, width {dim} = "
                f"{width} / {r:g}) train")
  return make


def _prompt(deep):
  name = "deep_prompt" if deep else "prompt"

  def make(arg, o, width, stem, blocks):
    n = _int_arg(name, arg, o["prompt_tokens"])
    return Plan({"prompt_tokens": n, "prompt_deep": deep}, (r"^block\d+/prompt$",), False, (),
                f"{'deep' if deep else 'shallow'} prompt tuning: {n} tokens"
                f"{' per block' if deep else ''} train")
  return make


def _prefix(arg, o, width, stem, blocks):
  n = _int_arg("prefix", arg, o["prefix_tokens"])
  if n % 2:
    raise UserError(f"strategy 'prefix:{n}': prefix vectors are split evenly over keys and values; "
                    f"give an even number")
  return Plan({"prefix_tokens": n}, (r"/prefix_(key|value)$",), False, (),
              f"prefix tuning: {n // 2} key and {n // 2} value vectors per block train")


# name -> (plan function, families it supports or None for every family)
STRATEGIES: dict[str, tuple[Callable, tuple[str, ...] | None]] = {
    "linear": (_linear, ALL_FAMILIES),
    "mlp": (_mlp, ALL_FAMILIES),
    "full": (_full, ALL_FAMILIES),
    "partial": (_partial, ALL_FAMILIES),
    "bitfit": (_bitfit, ALL_FAMILIES),
    "conv_adapter": (_conv_adapter, ALL_FAMILIES),
    "lora": (_lora, ("ast",)),
    "houlsby": (_adapter("houlsby"), ("ast",)),
    "pfeiffer": (_adapter("pfeiffer"), ("ast",)),
    "prompt": (_prompt(False), ("ast",)),
    "deep_prompt": (_prompt(True), ("ast",)),
    "prefix": (_prefix, ("ast",)),
}


def options(petl_config=None) -> dict:
  """DEFAULTS overridden by config block `petl` (unknown keys name the closest known ones)."""
  out = dict(DEFAULTS)
  for key, value in dict(petl_config or {}).items():
    if key not in DEFAULTS:
      raise unknown_name("config key", f"petl.{key}", [f"petl.{k}" for k in DEFAULTS])
    out[key] = value
  if out["train_norms"] not in NORMS:
    raise UserError(f"config key 'petl.train_norms' must be one of {', '.join(NORMS)}, got "
                    f"{out['train_norms']!r}")
  return out


def plan(spec: str, family: str, *, width: int, block_names=(), stem=(),
         petl_config=None) -> Plan:
  """The strategy `spec` for a model of `family` whose blocks are `width` wide."""
  name, _, arg = spec.partition(":")
  if name not in STRATEGIES:
    raise unknown_name("fine-tuning strategy", name, STRATEGIES)
  fn, families = STRATEGIES[name]
  if families is not None and family not in families:
    supported = sorted(n for n, (_, f) in STRATEGIES.items() if f is None or family in f)
    raise UserError(f"strategy {name!r} is not supported for model family {family!r} (it needs "
                    f"a transformer: {', '.join(families)}); supported for {family}: "
                    f"{', '.join(supported)}")
  o = options(petl_config)
  p = fn(arg or None, o, width, tuple(stem), tuple(block_names))
  fields = dict(p.petl)
  if family == "ast" and o["petl_ast_compat"]:
    fields["compat"] = True
  return dataclasses.replace(p, petl=fields)


def make_petl(p: Plan) -> petl_lib.Petl | None:
  """The model's `petl` field for a plan (None when the model needs no added modules)."""
  return petl_lib.Petl(**p.petl) if p.petl else None


def model_for(spec: str, model_name: str, *, num_classes: int, petl_config=None,
              **overrides):
  """(model with the modules `spec` adds, keyword arguments for `make_strategy`).

  Raises a `UserError` naming the supported strategies when `spec` does not fit the family.
  """
  from audiotl_jax import models  # Local: the registry is not needed to build masks.
  base = models.get_model(model_name, num_classes=num_classes, **overrides)
  family = model_name.strip().partition(":")[0]
  ctx = dict(family=family, width=int(base.embedding_dim),
             stem=tuple(getattr(base, "stem_names", tuple)()), petl_config=petl_config)
  p = plan(spec, family, width=ctx["width"], block_names=base.block_names(), stem=ctx["stem"],
           petl_config=petl_config)
  petl = make_petl(p)
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
  p = plan(spec, family, width=width, block_names=block_names, stem=stem, petl_config=petl_config)
  o = options(petl_config)
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


def load_adapted(adapter_dir, backbone=None):
  """An adapter-only checkpoint on its backbone -> (model, variables, metadata).

  `backbone` (a checkpoint path) defaults to the one recorded in the adapter's metadata; any
  other backbone is refused by its fingerprint.
  """
  import json
  from pathlib import Path

  import jax.numpy as jnp
  import ml_collections

  from audiotl_jax import fbank, models
  from audiotl_jax.train import checkpointing

  meta_path = Path(adapter_dir) / checkpointing.ADAPTER_META
  if not meta_path.exists():
    raise UserError(f"{adapter_dir} holds no adapter checkpoint ({meta_path.name} is missing)")
  meta = json.loads(meta_path.read_text())
  source, _, _ = checkpointing.load_model(Path(backbone or meta["backbone"]["path"]))
  petl = petl_lib.Petl(**{k: tuple(v) if isinstance(v, list) else v
                          for k, v in meta["petl"].items()}) if meta.get("petl") else None
  model = models.get_model(meta["model"], num_classes=meta["num_classes"],
                           **({"petl": petl} if petl else {}))
  fc = ml_collections.ConfigDict(meta["frontend"])
  frames = fbank.feature_frames(fc, int(round(meta["clip_seconds"] * fc.sample_rate)))
  fresh = jax.jit(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, frames, fc.n_mels)),
                                     train=False))()
  params, _ = transplant(source["params"], jax.device_get(fresh["params"]), resize=resize_leaf)
  stats, _ = transplant(source.get("batch_stats", {}), jax.device_get(fresh.get("batch_stats", {})))
  variables, meta = checkpointing.load_adapter(
      adapter_dir, {"params": params, "batch_stats": stats}, backbone_params=source["params"])
  return model, variables, meta
