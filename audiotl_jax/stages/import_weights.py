"""`audiotl import`: a weights file someone else trained -> a checkpoint every stage can start from.

  audiotl import --weights audioset_10_10_0.4593.pth --model ast:base --workdir runs/ast_audioset
  audiotl finetune --config configs/finetune.py:model=ast:base,strategy=lora \
      --config.init=runs/ast_audioset --config.data.dir=data/esc50 --workdir runs/ast_lora

The conversion itself (official AST and Hugging Face layouts, shape checks, position embeddings
resized to the input length) is `models/importers.py`. This stage writes the result where
`finetune`, `embed` and `score` look for pre-trained weights: `<workdir>/checkpoints/0/` with the
`model` and `metadata` items (model name, classes, AST's fbank frontend and AudioSet
normalisation), plus `results.json`, so the workdir counts as a finished run (a sweep can chain
from it, and running the command again does nothing).
"""
import hashlib
import json
import shutil
from pathlib import Path

import jax

import audiotl_jax
from audiotl_jax import config as config_lib
from audiotl_jax import models
from audiotl_jax.features import fbank
from audiotl_jax.errors import UserError
from audiotl_jax.models import importers
from audiotl_jax.data.ontology import Ontology
from audiotl_jax.train import checkpoints as checkpointing

AUDIOSET_CLASSES = 527


def _sha256(path: Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _classes(num_classes: int) -> list[dict]:
  """AST's AudioSet heads output the 527 classes in the official index order, which is ours."""
  if num_classes == AUDIOSET_CLASSES:
    onto = Ontology.load()
    return [{"id": mid, "name": name} for mid, name in zip(onto.classes, onto.class_names)]
  return [{"id": str(i), "name": f"class {i}"} for i in range(num_classes)]


def import_weights(weights, model_name: str, workdir, *, frames: int = 1024,
                   mel_bins: int = 128) -> dict:
  """Converts `weights` for `model_name` at an input of `frames` x `mel_bins`; returns results."""
  weights, workdir = Path(weights), Path(workdir)
  done = checkpointing.finished_run(workdir, "import")
  if done is not None:
    return done
  if not model_name.startswith("ast"):
    raise UserError(f"audiotl import: --model must be an AST variant (see `audiotl models`), got "
                    f"{model_name!r}; the CNN families are pre-trained here, not imported")
  if not weights.is_file():
    raise UserError(f"audiotl import: weights file {weights} "
                    f"{'is a directory' if weights.is_dir() else 'does not exist'}")
  sd = importers.read_state_dict(weights)
  own_head = importers.head_classes(sd)
  num_classes = own_head or AUDIOSET_CLASSES
  model = models.get_model(model_name, num_classes=num_classes)
  params, notes = importers.import_ast(sd, model, frames=frames, mel_bins=mel_bins)
  del sd
  # The frontend fine-tuning would give this model, at the input the weights were imported for.
  frontend = config_lib.to_dict(config_lib.load(f"finetune.py:model={model_name}").frontend)
  frontend.update(target_frames=frames, n_mels=mel_bins)
  description = (f"imported from {weights.name} ({'its own' if own_head else 'a fresh'} "
                 f"{num_classes}-class head)")
  metadata = {
      "stage": "import", "model": model_name, "num_classes": num_classes,
      "classes": _classes(num_classes), "task": "multilabel", "frontend": frontend,
      "norm": {"mean": fbank.AUDIOSET_MEAN, "std": fbank.AUDIOSET_STD},
      "clip_seconds": 10.0, "selection": description, "weights": str(weights.resolve()),
      "weights_sha256": _sha256(weights), "notes": notes,
      "num_params": models.count_params(params), "audiotl_version": audiotl_jax.__version__,
  }
  # No results.json but a checkpoint: an earlier import was killed after writing it. The
  # checkpoint is a pure function of the file, so it is written again rather than trusted.
  shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
  ckpt = checkpointing.Checkpointer(workdir)
  ckpt.save_model(0, {"params": params, "batch_stats": {}}, metadata)
  ckpt.close()
  checkpointing.mark_best(workdir, 0, {})
  results = {"stage": "import", "model": model_name, "weights": str(weights.resolve()),
             "num_classes": num_classes, "num_params": metadata["num_params"],
             "frames": frames, "mel_bins": mel_bins, "notes": notes}
  if jax.process_index() == 0:
    (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    for note in notes:
      print(f"import: {note}")
    print(f"import: {model_name} ({metadata['num_params']:,} parameters, {description}) -> "
          f"{workdir / 'checkpoints' / '0'}\n"
          f"import: fine-tune it with --config.init={workdir}")
  return results


def run(config, workdir) -> dict:
  """`audiotl import --weights F --model M --workdir W [--frames N --mel-bins B]`."""
  return import_weights(config.weights, config.model, Path(workdir), frames=config.frames,
                        mel_bins=config.mel_bins)
