"""Transfer strategies: added modules (a `Petl` the model is built with) plus masks over its tree.

A strategy says which modules the model gains, which parameters train, which BatchNorm statistics
may move and whether the model runs in training mode; the one fine-tuning loop applies the masks
through `optax.multi_transform` and `stop_gradient`. Parameters are matched by regular
expressions over their '/'-joined paths (`block3/attn/lora_q/a/kernel`), as big_vision freezes by
name. The head always trains.

  layers.py      `Petl` and the modules it adds (LoRA, bottleneck and conv adapters, prompts)
  strategies.py  the strategies by name: `STRATEGIES`, `DEFAULTS`, `options`, `plan` -> `Plan`
  masks.py       a plan applied to a model's trees (`make_strategy`), `model_for`, `transplant`

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
from audiotl_jax.models.transfer.layers import (
    Bottleneck, ConvAdapter, ConvMapAdapter, LoraDelta, MlpHead, Petl, bottleneck, prompt_init)
from audiotl_jax.models.transfer.masks import (
    Strategy, count_trainable, make_strategy, mask_by_regex, model_for, path_str, resize_leaf,
    transplant)
from audiotl_jax.models.transfer.strategies import (
    DEFAULTS, NORMS, STRATEGIES, Plan, make_petl, options, plan)

__all__ = [
    "DEFAULTS", "NORMS", "STRATEGIES", "Bottleneck", "ConvAdapter", "ConvMapAdapter", "LoraDelta",
    "MlpHead", "Petl", "Plan", "Strategy", "bottleneck", "count_trainable", "make_petl",
    "make_strategy", "mask_by_regex", "model_for", "options", "path_str", "plan", "prompt_init",
    "resize_leaf", "transplant",
]
