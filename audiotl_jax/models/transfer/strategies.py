"""Transfer strategies by name: what each asks of the model and of the masks (a `Plan`).

A plan function, `fn(arg, options, width, stem, blocks)`, turns `name:arg` and the `petl` config
block into a `Plan`: the `Petl` fields the model is built with (the modules it gains), the regexes
of the parameters that train besides the head, which BatchNorm statistics may move and whether the
model runs in training mode. It runs before the model exists, so it sees only the block width and
names; `masks.make_strategy` applies a plan to the model's trees. The table of strategies is in
the package docstring (`audiotl_jax.models.transfer`).
"""
import dataclasses
import re
from typing import Callable

from audiotl_jax.errors import UserError, unknown_name
from audiotl_jax.models.transfer import layers

ALL_FAMILIES = None
CONV_FAMILIES = ("cnn", "crnn", "dcase_cnn")
NORMS = ("auto", "none", "all")
DEFAULTS = dict(lora_rank=12, lora_reduction=0.0, lora_alpha=0.0, lora_targets="q,v",
                reduction=64.0, adapter_mode="parallel", adapter_location="ffn",
                conv_reduction=8.0, conv_kernel=3, prompt_tokens=25, prefix_tokens=24,
                mlp_hidden=256, train_norms="auto", petl_ast_compat=False)


@dataclasses.dataclass(frozen=True)
class Plan:
  """What a strategy asks of the model and of the masks, before the model exists."""
  petl: dict              # `Petl` fields the model is built with
  train: tuple[str, ...]  # regexes of trainable parameters besides the head
  model_train: bool
  norms: tuple[str, ...]  # per-block LayerNorms "auto" trains
  description: str
  train_stats: tuple[str, ...] = ()


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
  return Plan({"conv_adapter_dim": layers.bottleneck(width, r), "conv_reduction": r,
               "conv_kernel": int(o["conv_kernel"])},
              (r"/conv_adapter/", r"/adapter/"), False, (),
              f"convolutional adapters (reduction {r:g}) and the head train")


def _lora(arg, o, width, stem, blocks):
  compat = bool(o["petl_ast_compat"])
  if arg is None and float(o["lora_reduction"]) > 0:
    rank = layers.bottleneck(width, float(o["lora_reduction"]))
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
    dim = layers.bottleneck(width, r)
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


def make_petl(p: Plan) -> layers.Petl | None:
  """The model's `petl` field for a plan (None when the model needs no added modules)."""
  return layers.Petl(**p.petl) if p.petl else None
