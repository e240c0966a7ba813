r"""Parameter-efficient transfer of the Audio Spectrogram Transformer: AST-base from its released
AudioSet weights, transferred to ESC-50 (5-fold cross-validation) and Speech Commands v2 with a
linear probe, full fine-tuning and every parameter-efficient strategy, plus a few-shot arm.

  audiotl study --config configs/studies/petl_ast.py:weights=/models/audioset_10_10_0.4593.pth,\
data.esc50=/data/ESC-50-master,data.speech_commands=/data/speech_commands_v0.02 \
      --workdir runs/petl_ast
  audiotl study --config configs/studies/petl_ast.py:scale=test --workdir /tmp/petl

The report lists, per strategy, its trainable-parameter count and accuracy (mean and interval
over the folds or seeds). The weights are imported twice (`import/esc50`, `import/speech`), at the
input lengths of the AST recipes (512 frames for ESC-50's 5 s clips, 128 for Speech Commands'
1 s), since the position embeddings are resized at import. At `scale=test` no released weights
exist: a tiny AST pre-trained for a few steps on synthetic AudioSet stands in for them.

Arguments after the colon: scale (full | test), weights (the official .pth or a Hugging Face
.safetensors), `data.esc50` and `data.speech_commands` (raw roots), strategies (`+`-separated), seeds
(`+`-separated, for Speech Commands), few_shot (`+`-separated k per class, on ESC-50 fold 1),
few_shot_strategies.
"""
import ml_collections

from audiotl_jax.config import parse_arg
from configs.studies import common

STRATEGIES = ("linear", "full", "bitfit", "lora", "houlsby", "pfeiffer", "conv_adapter",
              "prompt", "deep_prompt", "prefix")


def get_config(arg=None):
  arg = parse_arg(arg, scale="full", weights="models/audioset_10_10_0.4593.pth", data=dict(
                  esc50="data/raw/ESC-50-master", speech_commands="data/raw/speech_commands_v0.02"),
                  strategies="+".join(STRATEGIES), seeds="0+1+2", few_shot="1+5+10",
                  few_shot_strategies="linear+lora+houlsby+full")
  test = arg.scale == "test"
  strategies = tuple(arg.strategies.split("+"))
  seeds = tuple(int(s) for s in arg.seeds.split("+"))
  folds = (1,) if test else (1, 2, 3, 4, 5)
  c = ml_collections.ConfigDict()
  c.description = "parameter-efficient transfer of AST (linear, full, every PETL strategy)"
  roots = arg.data.to_dict()
  if test:  # a stand-in for the released weights: a tiny AST, a few steps on synthetic AudioSet
    roots["audioset"] = ""
  steps = common.data_steps(roots, test=test, clip_seconds=1.0 if test else None,
                            esc50_folds=folds)
  if test:
    steps.append(common.stand_in_step({"ast_tiny": "ast:tiny"}))
    init = {"esc50": "{study}/import/ast_tiny", "speech": "{study}/import/ast_tiny"}
    after = {"esc50": ("import",), "speech": ("import",)}
  else:
    for name, frames in (("esc50", 512), ("speech", 128)):
      steps.append(dict(step=f"import_{name}", stage="import",
                        args=("--weights", arg.weights, "--model", "ast:base", "--frames",
                              str(frames), "--workdir", f"{{study}}/import_{name}/ast_base")))
    init = {k: f"{{study}}/import_{k}/ast_base" for k in ("esc50", "speech")}
    after = {k: (f"import_{k}",) for k in ("esc50", "speech")}
  # batches of 8: a multiple of any device count a test machine fakes (8)
  short = dict(total_steps=2, batch_size=8, **{"frontend.norm_batches": 1}) if test else {}

  def fixed(**keys):  # a step's fixed keys, shrunk at scale=test
    return tuple({**{k.replace("__", "."): v for k, v in keys.items()}, **short}.items())
  esc = tuple(common.prepared(f"esc50_fold{k}") for k in folds)
  steps.append(dict(
      step="esc50", stage="finetune", base="finetune.py:model=ast:base",
      axes=((":strategy", strategies), ("data.dir", esc)),
      fixed=fixed(init=init["esc50"], data__clip_seconds=1.0 if test else 5.0, batch_size=48,
                  num_epochs=50.0, progress=False),
      name="{strategy}-{dir}", after=(*after["esc50"], common.step_of("esc50"))))
  steps.append(dict(
      step="speech", stage="finetune", base="finetune.py:model=ast:base",
      axes=((":strategy", strategies), ("seed", seeds), ("data.seed", seeds)),
      zip=(("seed", "data.seed"),),
      fixed=fixed(init=init["speech"], data__dir=common.prepared("speech_commands"),
                  data__clip_seconds=1.0, batch_size=128, num_epochs=20.0, progress=False),
      name="{strategy}-s{seed}", after=(*after["speech"], common.step_of("speech_commands"))))
  steps.append(dict(
      step="few_shot", stage="finetune", base="finetune.py:model=ast:base",
      axes=((":strategy", tuple(arg.few_shot_strategies.split("+"))),
            ("data.few_shot", tuple(int(k) for k in arg.few_shot.split("+"))),
            ("seed", seeds), ("data.seed", seeds)),
      zip=(("seed", "data.seed"),),
      fixed=fixed(init=init["esc50"], data__dir=esc[0], data__clip_seconds=1.0 if test else 5.0,
                  batch_size=16, num_epochs=50.0, progress=False),
      name="{strategy}-{few_shot}shot-s{seed}", after=(*after["esc50"], common.step_of("esc50"))))
  steps.append(dict(step="report", stage="report", args=("--workdir", "{study}"),
                    after=("esc50", "speech", "few_shot")))
  c.steps = steps
  c.report = dict(
      notes=["Trainable parameters and accuracy per strategy; ESC-50 intervals are over the 5 "
             "folds, Speech Commands over seeds."]
      + (["scale=test: synthetic data and a tiny AST pre-trained for a few steps instead of the "
          "released weights; the numbers only show that the study runs."] if test else []))
  return c
