r"""The neural-collapse transferability study: do NC score, LogME and LEEP, computed on a target
task's training clips before any fine-tuning, predict how well each source model transfers?

  audiotl study --config configs/studies/nc_transferability.py:data.dcase2018_task1=/data/TUT-\
urban-acoustic-scenes-2018-development,data.speech_commands=/data/speech_commands_v0.02,\
data.gtzan=/data/gtzan,data.cough=/data/cough/labels.csv --workdir runs/nc
  audiotl study --config configs/studies/nc_transferability.py:scale=test --workdir /tmp/nc

Source states (`source/<label>`, each trained from scratch on its source task, full training):
the DCASE 2018 baseline CNN on DCASE 2018 Task 1 scenes (`dcase_cnn-scenes`), and the small CNN
and the CRNN each on Speech Commands (`cnn-speech`, `crnn-speech`) and on GTZAN genres
(`cnn-music`, `crnn-music`). Frames are 40 ms for scenes and music and 30 ms for speech, 50 %
overlap (16 kHz: windows of 640 and 480 samples, hops of 320 and 240). Target: a binary
cough-sound task, any CSV of `path,label[,split]` (the `csv` reader), transferred with a linear
probe and with full fine-tuning; NC score, LogME and LEEP on its training split against AUROC and
accuracy, with Pearson coefficients in the report. The paper reports |r| for LEEP / LogME / NC of
0.68 / 0.84 / 0.86 with a linear probe and 0.61 / 0.83 / 0.85 fully fine-tuned.

Arguments after the colon: scale (full | test), the raw roots `data.dcase2018_task1`,
`data.speech_commands`, `data.gtzan`, `data.cough` (a CSV file), seeds (`+`-separated transfer
seeds).
"""
import ml_collections

from audiotl_jax.config import parse_arg
from configs.studies import common

# label -> (model family, source dataset, window ms): the paper's source models.
SOURCES = (
    ("dcase_cnn-scenes", "dcase_cnn", "dcase2018_task1", 40),
    ("cnn-speech", "cnn", "speech_commands", 30),
    ("crnn-speech", "crnn", "speech_commands", 30),
    ("cnn-music", "cnn", "gtzan", 40),
    ("crnn-music", "crnn", "gtzan", 40),
)
SOURCE_CLIP = {"dcase2018_task1": 10.0, "speech_commands": 1.0, "gtzan": 30.0}


def get_config(arg=None):
  arg = parse_arg(arg, scale="full", data=dict(
      dcase2018_task1="data/raw/dcase2018_task1", speech_commands="data/raw/speech_commands_v0.02",
      gtzan="data/raw/gtzan", cough="data/raw/cough/labels.csv"), seeds="0+1+2")
  test = arg.scale == "test"
  seeds = tuple(int(s) for s in arg.seeds.split("+"))
  c = ml_collections.ConfigDict()
  c.description = "neural-collapse transferability: source models -> binary cough detection"
  steps = common.data_steps(arg.data.to_dict(), test=test, clip_seconds=1.0 if test else None)
  labels, families, sources, window_ms = zip(*SOURCES)
  variant = "tiny" if test else {"dcase_cnn": "base", "cnn": "S", "crnn": "S"}
  samples = tuple(16 * ms for ms in window_ms)  # 16 samples a millisecond at 16 kHz
  steps.append(dict(
      step="source", stage="finetune", base="finetune.py:strategy=full",
      axes=(("label", labels),
            ("model.name", tuple(f"{f}:{variant if test else variant[f]}" for f in families)),
            ("data.dir", tuple(common.prepared(s) for s in sources)),
            ("data.clip_seconds", tuple(1.0 if test else SOURCE_CLIP[s] for s in sources)),
            ("frontend.n_fft", samples), ("frontend.hop_length", tuple(n // 2 for n in samples))),
      zip=(("label", "model.name", "data.dir", "data.clip_seconds", "frontend.n_fft",
            "frontend.hop_length"),),
      fixed=(("batch_size", 8 if test else 32), ("num_epochs", 1.0 if test else 50.0),
             ("optim.lr", 1e-3), ("save_adapter", False), ("progress", False),
             *((("total_steps", 3), ("frontend.norm_batches", 1)) if test else ())),
      name="{label}", after=tuple(common.step_of(s) for s in set(sources))))
  cough = common.prepared("cough")
  steps.append(dict(
      step="finetune", stage="finetune", base="finetune.py",
      axes=(("init", "@source"), (":strategy", ("linear", "full")),
            ("seed", seeds), ("data.seed", seeds)),
      zip=(("seed", "data.seed"),),
      fixed=(("data.dir", cough), ("data.clip_seconds", 1.0 if test else 10.0),
             ("batch_size", 8 if test else 32), ("num_epochs", 1.0 if test else 30.0),
             ("progress", False), *((("total_steps", 3),) if test else ())),
      name="{init}-{strategy}-s{seed}", after=(common.step_of("cough"),)))
  steps.append(dict(
      step="score", stage="score", base="score.py", axes=(),
      fixed=(("checkpoints", "@source"), ("data.dir", cough),
             ("data.clip_seconds", 1.0 if test else 10.0),
             ("scores", ("nc_score", "logme", "leep")), ("batch_size", 8 if test else 64),
             ("progress", False)),
      name="cough", after=(common.step_of("cough"),)))
  steps.append(dict(step="report", stage="report", args=("--workdir", "{study}"),
                    after=("finetune", "score")))
  c.steps = steps
  c.report = dict(
      state_order=list(labels), state_steps=["source"],
      comparisons=[["speech-trained CNN vs scene-trained CNN", "cnn-speech", "dcase_cnn-scenes"],
                   ["CRNN vs CNN, both on speech", "crnn-speech", "cnn-speech"]],
      notes=["The paper reports |r| for LEEP / LogME / NC of 0.68 / 0.84 / 0.86 with a linear "
             "probe and 0.61 / 0.83 / 0.85 fully fine-tuned; compare with the score table."]
      + (["scale=test: synthetic data and tiny models; the numbers only show that the study "
          "runs."] if test else []))
  c.selection = dict(states="source", transfer=("finetune",), task_key="data.dir")
  return c
