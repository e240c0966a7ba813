"""Grain pipelines over a tiny prepared set whose clips are constant: a clip's value names it."""
import itertools

import numpy as np
import pytest
import soundfile as sf

from audiotl_jax.data import pipeline, readers, records
from audiotl_jax.data.dataset import PreparedDataset
from audiotl_jax.data.shard_writer import prepare
from audiotl_jax.errors import UserError

N = 12
CLIP = 1600  # 0.1 s at 16 kHz; clips are 0.05-0.2 s, so both crop and padding happen
LABELS = ["a", "b", "a;c", "c", "b", "a", "b;c", "c", "a", "b", "c", "a;b"]


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
  d = tmp_path_factory.mktemp("pipe")
  rows = []
  for i in range(N):
    n = 800 + 200 * i
    sf.write(d / f"c{i}.wav", np.full(n, 100 * (i + 1), np.int16), 16000)
    rows.append(f"c{i}.wav,{LABELS[i]},train")
  (d / "l.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
  prepare(readers.csv_manifest(d / "l.csv"), d / "out", shard_size=5, num_workers=1,
          progress=False)
  return PreparedDataset(d / "out")


@pytest.fixture(scope="module")
def value_to_record(ds):
  src = ds.source("train")
  return {int(records.decode(src[i])["audio"][0]): i for i in range(N)}


def _records(batch, value_to_record):
  return [value_to_record[int(a[0])] for a in batch["audio"]]


def _train(ds, **kw):
  kw = {"batch_size": 4, "clip_samples": CLIP, "seed": 3, "process_index": 0,
        "process_count": 1, **kw}
  return pipeline.train_iterator(ds, "train", **kw)


def test_shapes_and_targets(ds, value_to_record):
  b = next(_train(ds))
  assert b["audio"].shape == (4, CLIP) and b["audio"].dtype == np.int16
  assert b["label"].shape == (4, 3) and b["label"].dtype == np.float32
  labels = ds.labels("train")
  for row, r in zip(b["label"], _records(b, value_to_record)):
    assert np.flatnonzero(row).tolist() == sorted(labels[r].tolist())
  b = next(_train(ds, target="class", batch_size=6, process_index=1, process_count=2))
  assert b["label"].shape == (3,) and b["label"].dtype == np.int32
  assert b["audio"].shape == (3, CLIP)
  for cls, r in zip(b["label"], _records(b, value_to_record)):
    assert cls == labels[r][0]
  # Short clips are zero-padded at the end; long ones are cropped to constant audio.
  for a in b["audio"]:
    nz = np.flatnonzero(a)
    assert nz[0] == 0 and np.all(a[:len(nz)] == a[0])


def test_processes_split_each_epoch(ds, value_to_record):
  # 12 records, 2 processes, local batch 2: an epoch is 3 batches on each process.
  per_epoch = []
  for p in (0, 1):
    it = _train(ds, process_index=p, process_count=2)
    seen = [r for b in itertools.islice(it, 6) for r in _records(b, value_to_record)]
    per_epoch.append((seen[:6], seen[6:]))
  for epoch in (0, 1):
    a, b = per_epoch[0][epoch], per_epoch[1][epoch]
    assert sorted(a + b) == list(range(N)) and not set(a) & set(b)
  assert per_epoch[0][0] + per_epoch[1][0] != per_epoch[0][1] + per_epoch[1][1]  # reshuffled


def test_deterministic_by_seed(ds):
  first = [b["audio"] for b in itertools.islice(_train(ds), 5)]
  again = [b["audio"] for b in itertools.islice(_train(ds), 5)]
  other = [b["audio"] for b in itertools.islice(_train(ds, seed=4), 5)]
  assert all(np.array_equal(x, y) for x, y in zip(first, again))
  assert not all(np.array_equal(x, y) for x, y in zip(first, other))


@pytest.mark.parametrize("prefetch", [0, 2])
def test_state_restores_batches(ds, prefetch):
  it = _train(ds, prefetch=prefetch)
  for _ in range(2):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(3)]
  restored = _train(ds, prefetch=prefetch)
  restored.set_state(state)
  for want in expected:
    got = next(restored)
    np.testing.assert_array_equal(got["audio"], want["audio"])
    np.testing.assert_array_equal(got["label"], want["label"])


def test_worker_processes_match_state(ds):
  it = _train(ds, worker_count=1)
  next(it)
  state = it.get_state()
  want = next(it)
  it.close()
  restored = _train(ds, worker_count=1)
  restored.set_state(state)
  np.testing.assert_array_equal(next(restored)["audio"], want["audio"])
  restored.close()


@pytest.mark.parametrize("indices", [None, [1, 3, 4, 6, 7, 9, 10]])
def test_eval_covers_every_record_once(ds, value_to_record, indices):
  want = list(range(N)) if indices is None else indices
  kw = {"indices": indices, "batch_size": 4, "clip_samples": CLIP, "process_count": 3}
  num = pipeline.num_eval_batches(ds, "train", indices=indices, batch_size=3, process_count=3)
  seen = []
  for p in range(3):
    batches = list(pipeline.eval_batches(ds, "train", **{**kw, "batch_size": 3},
                                         process_index=p))
    assert len(batches) == num
    for b in batches:
      assert b["audio"].shape == (1, CLIP) and b["mask"].dtype == np.float32
      for a, m, i in zip(b["audio"], b["mask"], b["index"]):
        if m:
          assert value_to_record[int(a[0])] == i  # the start of the clip
          seen.append(int(i))
        else:
          assert i == -1 and not a.any()
  assert sorted(seen) == sorted(want)
  with pytest.raises(UserError, match="multiple of the process count 3"):
    pipeline.eval_batches(ds, "train", **kw, process_index=0)


def test_indices_and_class_map(ds, value_to_record):
  # Targets: a -> 1, c -> 0, b dropped; records 0, 3, 5 have labels a, c, a.
  class_map = np.array([1, -1, 0], np.int32)
  it = _train(ds, indices=[0, 3, 5], class_map=class_map, num_classes=2, target="class",
              batch_size=3)
  for b in itertools.islice(it, 2):
    got = dict(zip(_records(b, value_to_record), b["label"].tolist()))
    assert got == {0: 1, 3: 0, 5: 1}
  b = next(pipeline.eval_batches(ds, "train", indices=[1, 2], class_map=class_map,
                                 num_classes=2, batch_size=2, clip_samples=CLIP,
                                 process_index=0, process_count=1))
  np.testing.assert_array_equal(b["label"], [[0, 0], [1, 1]])  # b only -> an all-zero row
  with pytest.raises(UserError, match="no label left after class_map"):
    _train(ds, indices=[0, 1], class_map=class_map, num_classes=2, target="class")
  with pytest.raises(UserError, match="num_classes"):
    _train(ds, class_map=class_map)
  with pytest.raises(UserError, match=r"indices must lie in \[0, 12\)"):
    _train(ds, indices=[12])
