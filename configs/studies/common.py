"""Pieces every study config shares: where each dataset comes from, and the steps that prepare it.

A study prepares its own data (`audiotl prepare`, which skips a finished folder), so one command
runs it from the datasets as downloaded: its arguments name each dataset's root in its published
layout. At `scale=test` the study first writes synthetic data in those layouts (`audiotl
synthetic`) and reads it from there, so it runs end to end in seconds on a laptop.
"""

# Dataset -> (the reader that lists it, where `audiotl synthetic` writes it under data/, the
# synthetic generator's name); the csv reader's root is the CSV file itself.
DATASETS = {
    "audioset": ("audioset", "audioset", "audioset"),
    "speech_commands": ("speech_commands", "speech_commands", "speech_commands"),
    "dcase2018_task1": ("dcase2018_task1", "acoustic_scenes", "acoustic_scenes"),
    "dcase2020_task1a": ("dcase2020_task1a", "dcase2020_task1a", "dcase2020_task1a"),
    "dcase2018_task3": ("dcase2018_task3", "dcase2018_task3", "dcase2018_task3"),
    "gtzan": ("gtzan", "gtzan", "gtzan"),
    "esc50": ("esc50", "esc50", "esc50"),
    "cough": ("csv", "cough/cough.csv", "cough"),
}


def step_of(name: str) -> str:
  """The step that prepares dataset `name` (each dataset is its own step: readers differ in
  their options)."""
  return f"prepare_{name.partition('_fold')[0] if name.startswith('esc50') else name}"


def prepared(name: str) -> str:
  """The folder `audiotl prepare` writes dataset `name` into; ESC-50's folds are `esc50_fold<k>`,
  each its own prepared copy, since the reader assigns the splits when it lists the files."""
  return f"{{study}}/{step_of(name)}/{name}"


def data_steps(roots: dict, *, test: bool, clip_seconds: float | None = None, options=(),
               esc50_folds=(1,)) -> list[dict]:
  """Steps that make every dataset of `roots` ({name: raw root}) ready at `prepared(name)`.

  `test`: the roots are ignored; synthetic data in the published layouts is written first.
  `clip_seconds`: pad/crop every clip at preparation (None: each reader's own default).
  `options`: ((dataset, reader option, value), ...)."""
  names = list(roots)
  if test:
    roots = {n: f"{{study}}/data/{DATASETS[n][1]}" for n in names}
  steps = []
  if test:
    generators = "+".join(sorted({DATASETS[n][2] for n in names}))
    steps.append(dict(step="data", stage="synthetic",
                      args=("--scale", "test", "--datasets", generators,
                            "--workdir", "{study}/data")))
  base_fixed = [("num_workers", 1 if test else 0), ("progress", False)]
  if clip_seconds is not None:
    base_fixed.append(("clip_seconds", clip_seconds))
  for name in names:
    fixed = [("root", roots[name]), *base_fixed,
             *((f"options.{k}", v) for ds, k, v in options if ds == name)]
    labels = tuple(f"esc50_fold{k}" for k in esc50_folds) if name == "esc50" else (name,)
    axes = (("label", labels),)
    if name == "esc50":
      axes += (("options.fold", tuple(esc50_folds)),)
    steps.append(dict(step=step_of(name), stage="prepare",
                      base=f"prepare.py:reader={DATASETS[name][0]}", axes=axes,
                      zip=(tuple(k for k, _ in axes),) if len(axes) > 1 else (),
                      fixed=tuple(fixed), name="{label}", after=("data",) if test else ()))
  return steps


def stand_in_step(models: dict) -> dict:
  """scale=test has no released weights: step `import` pre-trains a tiny stand-in per
  {label: model} for a few steps on synthetic AudioSet, at `{study}/import/<label>`. The model
  is the pretrain config's argument, so each family gets its own frontend (fbank for AST)."""
  labels, names = zip(*models.items())
  return dict(
      step="import", stage="pretrain", base="pretrain.py:runlocal",
      axes=(("label", labels), (":model", names)), zip=(("label", ":model"),),
      fixed=(("data.dir", prepared("audioset")), ("total_steps", 2), ("batch_size", 8),
             ("eval_every", 2), ("checkpoint_every", 2), ("frontend.norm_batches", 1),
             ("progress", False)),
      name="{label}", after=(step_of("audioset"),))
