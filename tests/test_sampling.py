"""Balanced sampling from the local manifest, random gain, and reproducibility across a resume."""
import collections
import itertools

import jax
import numpy as np
import pytest
import soundfile as sf

from audiotl_jax.features import augment
from audiotl_jax.data import pipeline, readers, records, sampling
from audiotl_jax.data.dataset import PreparedDataset
from audiotl_jax.data.shard_writer import prepare
from audiotl_jax.errors import UserError
from conftest import tiny_pretrain_config

# 20 records: "common" on 16 of them, "rare" on 4 (two of those also "common").
LABELS = ["common"] * 16 + ["rare", "rare", "rare;common", "rare;common"]


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
  d = tmp_path_factory.mktemp("sampling")
  rows = []
  for i, label in enumerate(LABELS):
    sf.write(d / f"c{i}.wav", np.full(400, 10 * (i + 1), np.int16), 16000)
    rows.append(f"c{i}.wav,{label},train")
  (d / "l.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
  prepare(readers.csv_manifest(d / "l.csv"), d / "out", shard_size=8, num_workers=1,
          progress=False)
  return PreparedDataset(d / "out")


def _record_of(ds):
  src = ds.source("train")
  return {int(records.decode(src[i])["audio"][0]): i for i in range(len(LABELS))}


def _iter(ds, weights, **kw):
  kw = {"batch_size": 4, "clip_samples": 400, "seed": 7, "process_index": 0, "process_count": 1,
        "prefetch": 0, **kw}
  return pipeline.train_iterator(ds, "train", weights=weights, **kw)


def test_weights_come_from_the_selected_records(ds):
  classes = [c["id"] for c in ds.classes]
  common, rare = classes.index("common"), classes.index("rare")
  w = sampling.balanced_weights(ds, "train", np.arange(20))
  np.testing.assert_allclose(w[:16], 1 / 18)
  np.testing.assert_allclose(w[16:18], 1 / 4)
  np.testing.assert_allclose(w[18:], 1 / 4 + 1 / 18)
  # A selection counts only its own records; a class mapped away counts for nothing.
  class_map = np.full(2, -1, np.int32)
  class_map[rare] = 0
  w = sampling.balanced_weights(ds, "train", [0, 16, 18], class_map)
  np.testing.assert_allclose(w, [0, 0.5, 0.5])
  with pytest.raises(UserError, match="one entry per selected record"):
    _iter(ds, np.ones(3))
  with pytest.raises(UserError, match="not all zero"):
    _iter(ds, np.zeros(20))
  assert common != rare


def test_balanced_stream_draws_classes_evenly(ds):
  record_of = _record_of(ds)
  w = sampling.balanced_weights(ds, "train", np.arange(20))
  drawn = [record_of[int(a[0])] for b in itertools.islice(_iter(ds, w), 150) for a in b["audio"]]
  has_rare = np.mean([r >= 16 for r in drawn])
  assert 0.5 < has_rare < 0.65  # 1/2 + the rare records' share of "common"; uniform gives 0.2
  counts = collections.Counter(drawn)
  assert counts[0] < counts[16]


def test_weighted_stream_resumes_and_shards(ds):
  w = sampling.balanced_weights(ds, "train", np.arange(20))
  it = _iter(ds, w)
  for _ in range(3):
    next(it)
  state = it.get_state()
  want = [next(it)["audio"] for _ in range(3)]
  again = _iter(ds, w)
  again.set_state(state)
  for a in want:
    np.testing.assert_array_equal(next(again)["audio"], a)
  # Two processes together draw what one process draws, position by position.
  one = np.concatenate([b["audio"][:, 0] for b in itertools.islice(_iter(ds, w), 4)])
  parts = [np.concatenate([b["audio"][:, 0] for b in itertools.islice(
      _iter(ds, w, process_index=p, process_count=2), 4)]) for p in (0, 1)]
  np.testing.assert_array_equal(one[0::2], parts[0][:8])
  np.testing.assert_array_equal(one[1::2], parts[1][:8])
  other = np.concatenate([b["audio"][:, 0] for b in itertools.islice(_iter(ds, w, seed=8), 4)])
  assert not np.array_equal(one, other)


def test_random_gain():
  x = jax.numpy.ones((64, 10))
  y = augment.random_gain(jax.random.PRNGKey(0), x, max_db=6.0)
  gains_db = 20 * np.log10(np.asarray(y[:, 0]))
  assert gains_db.min() >= -6.0 - 1e-4 and gains_db.max() <= 6.0 + 1e-4 and gains_db.std() > 2
  np.testing.assert_allclose(y, y[:, :1] * np.ones((1, 10)), rtol=1e-6)  # one gain per clip
  np.testing.assert_array_equal(augment.random_gain(jax.random.PRNGKey(0), x, max_db=0.0), x)
  np.testing.assert_array_equal(y, augment.random_gain(jax.random.PRNGKey(0), x, max_db=6.0))


@pytest.mark.slow  # ~40 s on 2 cores; the pipeline-level resume test above is the fast check
def test_pretrain_resume_with_balanced_sampling_and_augmentation(prepared, tmp_path):
  from audiotl_jax.train import metrics
  from audiotl_jax.stages import pretrain
  kw = {"data.balanced": True, "augment.mixup_alpha": 0.4, "augment.gain_db": 6.0}
  whole = pretrain.run(tiny_pretrain_config(prepared["audioset"], **kw), tmp_path / "whole")
  assert pretrain.run(tiny_pretrain_config(prepared["audioset"], stop_at=2, **kw),
                        tmp_path / "parts") == {"stopped_at": 2}
  pretrain.run(tiny_pretrain_config(prepared["audioset"], **kw), tmp_path / "parts")

  def losses(workdir):
    return [r["train_loss"] for r in metrics.read_jsonl(workdir / "metrics.jsonl")
            if "train_loss" in r]

  assert len(losses(tmp_path / "whole")) == whole["total_steps"] == 4
  np.testing.assert_allclose(losses(tmp_path / "parts"), losses(tmp_path / "whole"), rtol=1e-5)


def test_shuffle_and_crop_draws_are_functions_of_seed_and_position():
  """Each epoch a permutation, a new one every epoch; any order of access, a pickled copy (a
  Grain worker) and a second dataset with the seed all give the same value at a position."""
  import pickle
  import grain
  n = 37
  shuffled = sampling.Shuffled(grain.MapDataset.source(np.arange(n)), seed=3)
  epochs = [[shuffled[e * n + k] for k in range(n)] for e in range(3)]
  for order in epochs:
    assert sorted(order) == list(range(n))
  assert epochs[0] != epochs[1] != epochs[2]
  backwards = [shuffled[i] for i in reversed(range(3 * n))][::-1]
  assert backwards == sum(epochs, [])
  copy = pickle.loads(pickle.dumps(shuffled))
  again = sampling.Shuffled(grain.MapDataset.source(np.arange(n)), seed=3)
  assert [copy[i] for i in range(3 * n)] == [again[i] for i in range(3 * n)] == backwards
  assert [sampling.Shuffled(grain.MapDataset.source(np.arange(n)), seed=4)[i]
          for i in range(n)] != epochs[0]
  crops = sampling.CropDraws(grain.MapDataset.source(np.arange(n)), seed=5)
  block = sampling.CropDraws.BLOCK
  positions = [0, 1, block - 1, block, 3 * block + 7]
  got = [crops[p] for p in positions]
  assert [x for x, _ in got] == [p % n for p in positions]  # the element passes through
  u = np.asarray([u for _, u in got])
  assert ((u >= 0) & (u < 1)).all() and len(set(u.tolist())) == len(u)
  assert [crops[p] for p in reversed(positions)][::-1] == got
  assert [pickle.loads(pickle.dumps(crops))[p] for p in positions] == got
  many = np.asarray([crops[p][1] for p in range(2 * block)])
  assert abs(many.mean() - 0.5) < 0.02 and many.min() < 0.01 and many.max() > 0.99


@pytest.mark.parametrize("n", [1, 2, 24, 257, 2049, 16385, 70000])
def test_the_shuffle_is_grains_position_for_position(n):
  """`Shuffled` draws its order a block at a time but must give Grain's `shuffle` order exactly:
  a run started with Grain's shuffle resumes in the same order, and results stay comparable."""
  import grain
  for seed in (0, 9, 2**32 - 1):
    ours = sampling.Shuffled(grain.MapDataset.source(np.arange(n)), seed)
    theirs = grain.MapDataset.source(np.arange(n)).shuffle(seed=seed)
    positions = np.unique(np.r_[np.arange(min(3 * n, 600)), n - 1, n, 2 * n + n // 2, 3 * n - 1])
    assert [int(ours[int(i)]) for i in positions] == [int(theirs[int(i)]) for i in positions]
