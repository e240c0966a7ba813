"""Two CPU processes with a coordinator on localhost: disjoint input shards, sharded steps, and a
checkpoint both write that one process reads back.

Each process is a fresh interpreter with 4 fake CPU devices (8 over the cluster, as in the
single-process tests); this file is also the worker's program (`python test_multihost.py ...`).
The two processes run once per module (`cluster`); the default suite checks them against each
other, the slow suite against one process doing the same steps.
"""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

N, BATCH, CLIP, STEPS = 16, 8, 1600, 2


def _model_and_featurizer(num_classes: int):
  import ml_collections
  from audiotl_jax import models
  from audiotl_jax.features import featurizer
  fc = ml_collections.ConfigDict(dict(sample_rate=16000, n_fft=256, hop_length=160, n_mels=32,
                                      fmin=0.0, fmax=8000.0))
  return (models.get_model("cnn:tiny", num_classes=num_classes),
          featurizer.make_featurizer(fc, {"mean": -30.0, "std": 15.0}))


def _probe() -> np.ndarray:
  """Fixed clips to run the trained model on, the same in every process."""
  return np.random.default_rng(7).integers(-3000, 3000, (BATCH, CLIP)).astype(np.int16)


def _steps(dataset, process_index: int, process_count: int, ckpt: Path | None = None) -> dict:
  """Every record id of one epoch of this process's stream, STEPS sharded train steps, and the
  logits of the trained model on `_probe()`; with `ckpt`, the state saved there as well."""
  import jax
  import optax
  from jax.experimental import multihost_utils
  from audiotl_jax.data import pipeline, records
  from audiotl_jax.train import checkpoints, mesh as mesh_lib, state as state_lib
  from audiotl_jax.train import step as steps
  from configs import common
  src = dataset.source("train")
  id_of = {int(records.decode(src[i])["audio"][0]): str(dataset.ids("train")[i])
           for i in range(N)}

  def batches():
    return pipeline.train_iterator(
        dataset, "train", batch_size=BATCH, clip_samples=CLIP, seed=5, target="multihot",
        process_index=process_index, process_count=process_count, prefetch=0)

  it = batches()
  local_batches = N // BATCH  # one epoch, over every process together
  ids = [id_of[int(a[0])] for _ in range(local_batches) for a in next(it)["audio"]]
  model, featurize = _model_and_featurizer(dataset.num_classes)
  # Plain SGD. With AdamW, one data order (a numpy permutation tried for the shuffle) made two
  # of the parameter sums differ by up to 2 % after two steps while the losses agreed to 1e-5:
  # Adam divides by the root of the second moment, so where a gradient is ~0 the last-bit
  # difference of a cross-process sum becomes a difference of up to a whole step. The
  # comparison would then be of rounding, not of the sharding.
  tx = optax.sgd(1e-2)
  mesh = mesh_lib.make_mesh()
  state, shardings = state_lib.create(model, tx, mesh, frames=11, n_mels=32, seed=0)
  augment = common.augment(specaugment=False)  # masks depend on a row's place in the batch
  step = steps.jit_train_step(steps.make_train_step(
      model, featurize, tx, loss_fn=steps.bce_loss, augment=augment,
      num_classes=dataset.num_classes, target="multihot"), shardings, mesh)
  it, losses = batches(), []
  for _ in range(STEPS):
    state, m = step(state, mesh_lib.to_global(next(it), mesh), steps.norm_on_mesh({"mean": -30.0, "std": 15.0}, mesh))
    losses.append(float(m["loss"]))
  # The probe as a batch: each process feeds its own rows, as in evaluation.
  rows = BATCH // process_count
  probe = mesh_lib.to_global({"audio": _probe()[process_index * rows:(process_index + 1) * rows]},
                             mesh)["audio"]
  logits, _ = steps.make_predict(model, featurize)(state.params, state.batch_stats, probe)
  if ckpt is not None:
    saver = checkpoints.Checkpointer(ckpt)
    saver.save(STEPS, state, None, {"model": "cnn:tiny", "num_classes": dataset.num_classes})
    saver.close()
  params = jax.tree.map(lambda x: float(np.asarray(jax.device_get(x)).sum()),
                        multihost_utils.process_allgather(state.params, tiled=True))
  return {"ids": ids, "losses": losses, "params": jax.tree.leaves(params),
          "logits": np.asarray(multihost_utils.process_allgather(logits, tiled=True)).tolist(),
          "devices": jax.device_count(), "processes": jax.process_count()}


def _make_dataset(root: Path):
  import soundfile as sf
  from audiotl_jax.data import readers
  from audiotl_jax.data import shard_writer as prepare
  from audiotl_jax.data.dataset import PreparedDataset
  rows = []
  for i in range(N):
    sf.write(root / f"c{i}.wav", np.full(800 + 100 * i, 50 * (i + 1), np.int16), 16000)
    rows.append(f"c{i}.wav,{'abc'[i % 3]},train")
  (root / "l.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
  prepare.prepare(readers.csv_manifest(root / "l.csv"), root / "out", shard_size=5,
                  num_workers=1, progress=False)
  return PreparedDataset(root / "out")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
  """Two worker processes, 4 devices each, against one coordinator: STEPS train steps, then a
  checkpoint both write to `root/ckpt`. Returns (dataset, root, the two processes' results)."""
  from conftest import run_processes
  root = tmp_path_factory.mktemp("multihost")
  dataset = _make_dataset(root)
  run_processes(lambda p: [sys.executable, __file__, str(dataset.path), str(root / f"p{p}.json"),
                           str(root / "ckpt")], timeout=240)
  return dataset, root, [json.loads((root / f"p{p}.json").read_text()) for p in (0, 1)]


def test_two_processes_read_disjoint_shards_and_agree(cluster):
  dataset, _, results = cluster
  assert [r["processes"] for r in results] == [2, 2]
  assert [r["devices"] for r in results] == [8, 8]
  a, b = results[0]["ids"], results[1]["ids"]
  assert len(a) == len(b) == N // 2 and not set(a) & set(b)
  assert sorted(a + b) == sorted(dataset.ids("train").tolist())  # every record once per epoch
  # One job: both processes see the same losses, parameters and (gathered) predictions.
  for key in ("losses", "params", "logits"):
    assert results[0][key] == results[1][key], key
  assert np.isfinite(results[0]["losses"]).all() and results[0]["losses"][0] > 0


def test_checkpoint_of_two_processes_loads_in_one(cluster, devices):
  """The state two processes saved, read by one (this one) with `load_model`, gives the logits
  the two computed before saving."""
  import jax
  from audiotl_jax.train import checkpoints, step as steps
  dataset, root, results = cluster
  variables, metadata, step_dir = checkpoints.load_model(root / "ckpt")
  assert step_dir.name == str(STEPS) and metadata["model"] == "cnn:tiny"
  assert jax.process_count() == 1
  np.testing.assert_allclose(
      [float(np.asarray(x).sum()) for x in jax.tree.leaves(variables["params"])],
      results[0]["params"], rtol=1e-6)
  model, featurize = _model_and_featurizer(dataset.num_classes)
  logits, _ = steps.make_predict(model, featurize)(
      variables["params"], variables["batch_stats"], _probe())
  np.testing.assert_allclose(np.asarray(logits), results[0]["logits"], rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # a third interpreter compiles the step again: 20-40 s more on 2 shared cores
def test_two_processes_match_one_process(cluster, devices):
  dataset, _, results = cluster
  single = _steps(dataset, 0, 1)  # here: 8 devices, the whole global batch
  assert sorted(single["ids"]) == sorted(results[0]["ids"] + results[1]["ids"])
  for r in results:
    np.testing.assert_allclose(r["losses"], single["losses"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r["params"], single["params"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(r["logits"], single["logits"], rtol=1e-4, atol=1e-5)


if __name__ == "__main__":
  sys.path.insert(0, str(Path(__file__).parents[1]))
  from audiotl_jax.train import mesh as _mesh
  assert _mesh.initialize_distributed()
  import jax as _jax
  from audiotl_jax.data.dataset import PreparedDataset
  out = _steps(PreparedDataset(sys.argv[1]), _jax.process_index(), _jax.process_count(),
               Path(sys.argv[3]) if len(sys.argv) > 3 else None)
  Path(sys.argv[2]).write_text(json.dumps(out))
