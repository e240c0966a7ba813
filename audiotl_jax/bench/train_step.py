"""`audiotl bench --only train_step`: the pre-training step of each model family, in clips/s.

The step is the one `audiotl pretrain` runs (`timing.time_train_step`), with the optimizer and
augmentation of `configs/pretrain.py`, on random clips and AudioSet-sized (527) multi-hot labels.
Every model takes the same 16 kHz log-mel frontend (`frontend.FRONTEND`, 1001 frames x 64 bins
for 10 s), which is what `configs/pretrain.py` gives the conv families, Cnn14 and VGGish alike, so
the rows differ only in the network. `AUDIOTL_BENCH_MODELS=panns:cnn14,vggish:base` benches
those registry names instead of the defaults (here and in the `embedding` bench).
"""
import os

import ml_collections

from audiotl_jax import models
from audiotl_jax.bench import timing
from audiotl_jax.bench.frontend import FRONTEND
from audiotl_jax.features import logmel

MODELS_ENV = "AUDIOTL_BENCH_MODELS"
MODELS = ["cnn:S", "crnn:S", "dcase_cnn", "panns:cnn14", "vggish:base"]


def chosen_models(default: list[str]) -> list[str]:
  """`AUDIOTL_BENCH_MODELS` (comma-separated registry names) when set, else `default`."""
  names = [n.strip() for n in os.environ.get(MODELS_ENV, "").split(",") if n.strip()]
  for name in names:  # before any timing: an unknown name fails now, listing the known ones
    models.get_model(name, num_classes=527)
  return names or default


def bench_train_step(workdir, quick: bool) -> list[dict]:
  from audiotl_jax import config as config_lib
  from audiotl_jax.train import mesh as mesh_lib
  defaults = config_lib.load("pretrain.py")  # The optimizer and augmentation a real run uses.
  rows = []
  clip_seconds, batch = (1.0, 8) if quick else (10.0, 16)
  samples = int(clip_seconds * FRONTEND["sample_rate"])
  fc = ml_collections.ConfigDict(FRONTEND)
  frames = logmel.num_frames(samples, fc.hop_length)
  mesh = mesh_lib.make_mesh()
  batch = timing.fit_batch(batch, mesh)
  data = timing.random_batch(batch, samples)
  for name in chosen_models(["cnn:tiny"] if quick else MODELS):
    model = models.get_model(name, num_classes=527)
    compile_s, sec, num_params = timing.time_train_step(
        model, fc, {"mean": -30.0, "std": 15.0}, data, mesh, defaults, frames=frames,
        repeats=2 if quick else 5)
    rows.append({"bench": "train_step", "model": name, "clip_seconds": clip_seconds,
                 "batch": batch, "clips_per_s": batch / sec, "step_s": sec,
                 "compile_s": compile_s, "params": num_params})
  return rows
