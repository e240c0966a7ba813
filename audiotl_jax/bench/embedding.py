"""`audiotl bench --only embedding`: clips/s through the Python API (`api.Model.__call__`).

What a user's `model(waveforms, 16000)` costs end to end: the host's checks and int16
conversion, the transfer, featurizer + model (jitted, sharded over every device), and fetching
`logits` and `embedding` back as numpy. Random weights (throughput does not depend on them) with
the 16 kHz log-mel frontend of the other benches, 10 s clips; compilation is timed apart.
`AUDIOTL_BENCH_MODELS` picks other registry names, as for `train_step`.
"""
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from audiotl_jax import api, models
from audiotl_jax.bench import timing
from audiotl_jax.bench.frontend import FRONTEND
from audiotl_jax.bench.train_step import chosen_models
from audiotl_jax.features import featurizer
from audiotl_jax.train.inference import Inference

MODELS = ["cnn:S", "dcase_cnn", "panns:cnn14", "vggish:base"]
NORM = {"mean": -30.0, "std": 15.0}


def random_model(name: str, clip_seconds: float, batch_size: int, workdir) -> api.Model:
  """`api.Model` of a randomly initialised `name`, as `api.load` would give for a checkpoint."""
  fc = ml_collections.ConfigDict(FRONTEND)
  net = models.get_model(name, num_classes=527)
  frames = featurizer.feature_frames(fc, int(clip_seconds * fc.sample_rate))
  variables = jax.device_get(jax.jit(lambda: net.init(
      jax.random.PRNGKey(0), jnp.zeros((1, frames, fc.n_mels)), train=False))())
  meta = {"model": name, "num_classes": 527, "frontend": dict(FRONTEND), "norm": NORM,
          "clip_seconds": clip_seconds}
  inference = Inference(net, variables, meta, featurizer.make_featurizer(fc, NORM), fc,
                        Path(workdir))
  return api.Model(inference, batch_size=batch_size)


def bench_embedding(workdir, quick: bool) -> list[dict]:
  clip_seconds, batch, repeats = (1.0, 8, 2) if quick else (10.0, 16, 5)
  sr = FRONTEND["sample_rate"]
  rng = np.random.default_rng(0)
  audio = (0.1 * rng.standard_normal((batch, int(clip_seconds * sr)))).astype(np.float32)
  rows = []
  for name in chosen_models(["cnn:tiny"] if quick else MODELS):
    model = random_model(name, clip_seconds, batch, workdir)
    with timing.Stopwatch() as compile_clock:
      out = model(audio, sr)  # compiles; the numpy result means the work is done
    sec = timing.measure(lambda: model(audio, sr), repeats).median
    rows.append({"bench": "embedding", "model": name, "clip_seconds": clip_seconds,
                 "batch": batch, "devices": model.mesh.devices.size,
                 "clips_per_s": batch / sec, "call_s": sec, "compile_s": compile_clock.seconds,
                 "embedding_dim": int(out["embedding"].shape[1]),
                 "params": model.num_params})
  return rows
