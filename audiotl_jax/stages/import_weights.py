"""`audiotl import`: a weights file someone else trained -> a checkpoint every stage can start from.

  audiotl import --weights audioset_10_10_0.4593.pth --model ast:base --workdir runs/ast_audioset
  audiotl import --weights vggish-10086976.pth --pca vggish_pca_params-970ea276.pth \
      --model vggish:base --workdir runs/vggish
  audiotl finetune --config configs/finetune.py:model=ast:base,strategy=lora \
      --config.init=runs/ast_audioset --config.data.dir=data/esc50 --workdir runs/ast_lora

The conversion itself (official AST and Hugging Face layouts, shape checks, position embeddings
resized to the input length) is `models/importers.py`, VGGish's (torchvggish's layout, the
release's PCA) `models/import_vggish.py`, PANNs' (the released `{'model': state_dict}` files,
BatchNorm statistics included, the frontend set-up checked against the file's STFT and mel
buffers) `models/import_panns.py`; `_IMPORTERS` picks one by model family. This stage
writes the result where `finetune`, `embed` and `score` look for pre-trained weights:
`<workdir>/checkpoints/0/` with the `model` and `metadata` items (model name, classes, the
family's frontend and normalisation), plus `results.json`, so the workdir counts as a finished
run (a sweep can chain from it, and running the command again does nothing).

On several processes every one converts the file, because the Orbax save is collective (Orbax
writes host arrays from process 0 alone); process 0 alone clears the folder and writes
`best.json` and `results.json`, and every process returns once they are there.
"""
import hashlib
import json
import shutil
from pathlib import Path

import jax
from jax.experimental import multihost_utils

import audiotl_jax
from audiotl_jax import config as config_lib, fileio
from audiotl_jax import models
from audiotl_jax.features import fbank
from audiotl_jax.features import vggish as vggish_features
from audiotl_jax.errors import UserError
from audiotl_jax.models import import_panns
from audiotl_jax.models import import_vggish
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


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _classes(num_classes: int) -> list[dict]:
  """AST's AudioSet heads output the 527 classes in the official index order, which is ours."""
  if num_classes == AUDIOSET_CLASSES:
    onto = Ontology.load()
    return [{"id": mid, "name": name} for mid, name in zip(onto.classes, onto.class_names)]
  return [{"id": str(i), "name": f"class {i}"} for i in range(num_classes)]


def _ast(weights: Path, model_name: str, *, frames: int, mel_bins: int, pca) -> dict:
  """AST: its own AudioSet head (or a fresh one), the fbank frontend, AudioSet's statistics."""
  if pca:
    raise UserError("audiotl import: --pca (VGGish's post-processing) does not apply to AST")
  sd = importers.read_state_dict(weights)
  own_head = importers.head_classes(sd)
  num_classes = own_head or AUDIOSET_CLASSES
  model = models.get_model(model_name, num_classes=num_classes)
  params, notes = importers.import_ast(sd, model, frames=frames, mel_bins=mel_bins)
  del sd
  # The frontend fine-tuning would give this model, at the input the weights were imported for.
  frontend = config_lib.to_dict(config_lib.load(f"finetune.py:model={model_name}").frontend)
  frontend.update(target_frames=frames, n_mels=mel_bins)
  return dict(variables={"params": params, "batch_stats": {}}, num_classes=num_classes,
              classes=_classes(num_classes), task="multilabel", frontend=frontend,
              norm={"mean": fbank.AUDIOSET_MEAN, "std": fbank.AUDIOSET_STD}, clip_seconds=10.0,
              notes=notes, frames=frames, mel_bins=mel_bins,
              description=f"imported from {weights.name} ({'its own' if own_head else 'a fresh'} "
                          f"{num_classes}-class head)")


def _vggish(weights: Path, model_name: str, *, frames: int, mel_bins: int, pca) -> dict:
  """VGGish: no classifier, so an identity head (num_classes = the embedding width, logits =
  embedding); its own frontend, never normalised; no fixed clip length (embed uses each
  dataset's own). Its input is fixed at 96 x 64 per example: `frames` and `mel_bins` do not
  apply."""
  dim = models.get_model(model_name, num_classes=1).embedding_dim
  model = models.get_model(model_name, num_classes=dim)
  variables, notes = import_vggish.import_vggish(weights, model, pca=pca)
  return dict(variables=variables, num_classes=dim, task="embedding",
              classes=[{"id": f"e{i}", "name": f"embedding {i}"} for i in range(dim)],
              frontend=vggish_features.frontend_config(), norm={"mean": 0.0, "std": 1.0},
              clip_seconds=None, notes=notes, frames=vggish_features.EXAMPLE_FRAMES,
              mel_bins=vggish_features.N_MELS,
              description=f"imported from {weights.name} (an embedding model: identity "
                          f"{dim}-d head{', PCA post-processing' if pca else ''})")


def _panns(weights: Path, model_name: str, *, frames: int, mel_bins: int, pca) -> dict:
  """PANNs: their AudioSet head, BatchNorm statistics, the log-mel set-up the file was trained
  with (checked against its buffers) and no normalisation (`bn0` does it). The set-up fixes the
  input: `frames` and `mel_bins` do not apply."""
  if pca:
    raise UserError("audiotl import: --pca (VGGish's post-processing) does not apply to PANNs")
  got = import_panns.import_panns(weights, model_name)
  frontend = config_lib.to_dict(config_lib.load(f"finetune.py:model={model_name}").frontend)
  frontend.update(got.frontend, target_frames=0)
  return dict(variables=got.variables, num_classes=got.num_classes,
              classes=_classes(got.num_classes), task="multilabel", frontend=frontend,
              norm={"mean": 0.0, "std": 1.0}, clip_seconds=10.0, notes=got.notes,
              frames=got.frames, mel_bins=frontend["n_mels"],
              description=f"imported from {weights.name} (its own {got.num_classes}-class head)")


# model family -> its converter: weights file -> variables and what the metadata says of them.
_IMPORTERS = {"ast": _ast, "vggish": _vggish, "panns": _panns}


def import_weights(weights, model_name: str, workdir, *, frames: int = 1024,
                   mel_bins: int = 128, pca=None) -> dict:
  """Converts `weights` (and VGGish's `pca` parameters, if given) for `model_name` at an input of
  `frames` x `mel_bins`; returns results."""
  weights, workdir = Path(weights), fileio.path(workdir)
  done = checkpointing.finished_run(workdir, "import")
  if done is not None:
    return done
  family = model_name.strip().partition(":")[0]
  if family not in _IMPORTERS:
    raise UserError(f"audiotl import: --model must be an AST variant or another family with an "
                    f"importer ({', '.join(_IMPORTERS)}; see `audiotl models`), got "
                    f"{model_name!r}; the CNN families are pre-trained here, not imported")
  if not weights.is_file():
    raise UserError(f"audiotl import: weights file {weights} "
                    f"{'is a directory' if weights.is_dir() else 'does not exist'}")
  got = _IMPORTERS[family](weights, model_name, frames=frames, mel_bins=mel_bins, pca=pca)
  params, notes, description = got["variables"]["params"], got["notes"], got["description"]
  frames, mel_bins = got["frames"], got["mel_bins"]
  metadata = {
      "stage": "import", "model": model_name, "num_classes": got["num_classes"],
      "classes": got["classes"], "task": got["task"], "frontend": got["frontend"],
      "norm": got["norm"], "clip_seconds": got["clip_seconds"], "selection": description,
      "weights": str(weights.resolve()), "weights_sha256": _sha256(weights), "notes": notes,
      "num_params": models.count_params(params), "audiotl_version": audiotl_jax.__version__,
  }
  if pca:
    metadata.update(pca=str(Path(pca).resolve()), pca_sha256=_sha256(Path(pca)))
  num_classes = got["num_classes"]
  # No results.json but a checkpoint: an earlier import was killed after writing it. The
  # checkpoint is a pure function of the file, so it is written again rather than trusted.
  if jax.process_index() == 0:  # another process's delete could hit the folder mid-save
    if fileio.is_local(workdir):
      shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
    else:
      (workdir / "checkpoints").rmtree(missing_ok=True)
  _barrier("audiotl import: cleared")
  ckpt = checkpointing.Checkpointer(workdir)
  ckpt.save_model(0, got["variables"], metadata)
  ckpt.close()
  checkpointing.mark_best(workdir, 0, {})
  results = {"stage": "import", "model": model_name, "weights": str(weights.resolve()),
             "num_classes": num_classes, "num_params": metadata["num_params"],
             "frames": frames, "mel_bins": mel_bins, "notes": notes}
  if jax.process_index() == 0:
    fileio.write_text(workdir / "results.json", json.dumps(results, indent=2) + "\n")
    for note in notes:
      print(f"import: {note}")
    print(f"import: {model_name} ({metadata['num_params']:,} parameters, {description}) -> "
          f"{workdir / 'checkpoints' / '0'}\n"
          f"import: fine-tune it with --config.init={workdir}")
  _barrier("audiotl import: written")  # no process returns before results.json is there
  return results


def run(config, workdir) -> dict:
  """`audiotl import --weights F --model M --workdir W [--frames N --mel-bins B --pca P]`."""
  return import_weights(config.weights, config.model, workdir, frames=config.frames,
                        mel_bins=config.mel_bins, pca=config.get("pca") or None)
