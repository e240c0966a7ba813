"""`audiotl bench --only train_step`: the CNN pre-training step, in clips/s.

The step is the one `audiotl pretrain` runs (`timing.time_train_step`), with the optimizer and
augmentation of `configs/pretrain.py`, on random clips and AudioSet-sized (527) multi-hot labels.
"""
import ml_collections

from audiotl_jax import models
from audiotl_jax.bench import timing
from audiotl_jax.bench.frontend import FRONTEND
from audiotl_jax.features import logmel


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
  names = ["cnn:tiny"] if quick else ["cnn:S", "crnn:S", "dcase_cnn"]
  for name in names:
    model = models.get_model(name, num_classes=527)
    compile_s, sec, num_params = timing.time_train_step(
        model, fc, {"mean": -30.0, "std": 15.0}, data, mesh, defaults, frames=frames,
        repeats=2 if quick else 5)
    rows.append({"bench": "train_step", "model": name, "clip_seconds": clip_seconds,
                 "batch": batch, "clips_per_s": batch / sec, "step_s": sec,
                 "compile_s": compile_s, "params": num_params})
  return rows
