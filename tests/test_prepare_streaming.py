"""Prepare streams: the listing is consumed shard by shard, bookkeeping lives on disk, and a
streamed listing (AudioSet) gives the same prepared dataset on every pass, with any worker count.
Memory against dataset size is measured by `audiotl bench --only prepare` (BENCHMARKS.md)."""
import json

import numpy as np
import pytest

from audiotl_jax.data import shard_writer as prepare_lib
from audiotl_jax.data import readers
from audiotl_jax.data.diskindex import DiskIndex
from audiotl_jax.data.dataset import PreparedDataset
from audiotl_jax.data.readers.common import ProblemLog, Streamed
from audiotl_jax.bench.prepare import write_layout
from test_prepare import _check_consistent, _run, _wav


def test_disk_index_is_a_first_writer_wins_map_and_a_set():
  with DiskIndex() as index:
    index.add_many([("a", "1"), ("b", "2"), ("a", "3")])
    assert index.get("a") == "1" and index.get("b") == "2" and index.get("zz", "-") == "-"
    assert index.add("c") and not index.add("c") and not index.add("a", "9")
    assert "c" in index and "d" not in index and len(index) == 3
    folder = index._tmp.name  # pylint: disable=protected-access
  import os
  assert not os.path.exists(folder)  # the scratch file goes with the index


def test_disk_index_keeps_the_smallest_value_in_any_order():
  for order in ([("k", "b"), ("k", "a"), ("k", "c")], [("k", "c"), ("k", "b"), ("k", "a")]):
    with DiskIndex() as index:
      index.add_many(order, keep="smallest")
      assert index.get("k") == "a"


def test_audioset_clip_in_two_places_resolves_the_same_whatever_the_disk_order(tmp_path):
  """Files are indexed in directory order (nothing sorted in memory); a tie goes to the smallest
  path, so the choice is reproducible across copies of a download."""
  write_layout(tmp_path, rows=2, clips=0)
  audio = tmp_path / "audio/balanced_train"
  for rel in ("z/Yb0000000000_30.000_40.000.flac", "a/b0000000000_30000_40000.wav",
              "b0000000000.ogg"):
    _wav(audio / rel, seconds=0.05)
  listing = readers.audioset(tmp_path)
  [item] = list(listing.items)
  assert item.path == audio / "a/b0000000000_30000_40000.wav"
  assert [p["reason"] for p in listing.problems] == ["missing file"]


def test_problem_log_appends_and_iterates_like_a_list():
  log = ProblemLog()
  assert len(log) == 0 and list(log) == []
  log.append({"id": "a", "reason": "missing file"})
  log.append({"id": "b", "reason": "duplicate id"})
  assert [p["id"] for p in log] == ["a", "b"] == [p["id"] for p in log]  # iterates again
  log.append({"id": "c", "reason": "x"})  # appending after iterating keeps the order
  assert [p["id"] for p in log] == ["a", "b", "c"] and len(log) == 3


def test_prepare_consumes_the_listing_shard_by_shard(tmp_path, monkeypatch):
  """A shard is written before the listing has yielded much more than that shard's items, so the
  listing is never held whole (the bench measures what this means for memory)."""
  for i in range(12):
    _wav(tmp_path / f"w{i}.wav", seconds=0.05)
  yielded, seen_at_write = [0], []

  def items():
    for i in range(12):
      yielded[0] += 1
      yield readers.Item(f"w{i}", tmp_path / f"w{i}.wav", ("a" if i % 2 else "b",),
                         "train" if i % 3 else "test")

  listing = readers.DatasetListing("gen", "multiclass", [{"id": "a", "name": "a"},
                                                         {"id": "b", "name": "b"}],
                                   Streamed(items))
  real = prepare_lib._write_shard  # pylint: disable=protected-access

  def spy(task):
    seen_at_write.append((task["stem"], yielded[0]))
    return real(task)

  monkeypatch.setattr(prepare_lib, "_write_shard", spy)
  m = _run(listing, tmp_path / "out", shard_size=2)
  # Splits interleave (test, train, train, ...); each shard is written as soon as it is full,
  # with the number of items the listing had yielded by then.
  assert seen_at_write == [("train-00000", 3), ("test-00000", 4), ("train-00001", 6),
                           ("train-00002", 9), ("test-00001", 10), ("train-00003", 12)]
  assert m["counts"]["rows"] == 12 and m["splits"]["train"]["num_records"] == 8
  _check_consistent(listing, tmp_path / "out", m)


@pytest.mark.parametrize("workers", [1, 2])
def test_streamed_audioset_with_workers(tmp_path, workers):
  """The bench's layout (official CSV, Y-named clips, half of the rows without a file) at a small
  size: every row accounted for, ids and labels as listed, the same on a second pass."""
  write_layout(tmp_path / "src", rows=40, clips=20)
  listing = readers.audioset(tmp_path / "src")
  assert isinstance(listing.items, Streamed)
  m = _run(listing, tmp_path / "out", shard_size=6, num_workers=workers)
  assert m["counts"] == {"rows": 40, "records": 20, "skipped": 0, "dropped": 20,
                         "kept_with_problems": 0, "notes": 0}
  assert m["reasons"]["dropped"] == {"missing file": 20}
  assert len(m["splits"]["balanced_train"]["shards"]) == 4
  ds = _check_consistent(listing, tmp_path / "out", m)  # a second pass over the listing
  assert len(listing.problems) == 20  # rebuilt by that pass, not doubled
  problems = list(ds.log("problems"))
  assert [p["row"] for p in problems] == list(range(24, 44))  # 3 comment lines, header-less
  assert {p["reason"] for p in problems} == {"missing file"}
  cov = m["coverage"]["balanced_train"]["classes"]
  assert sum(c["listed"] for c in cov) >= 40 and all(
      c["missing"] == c["listed"] - c["prepared"] for c in cov)
  # The labels index, written member by member, loads as an ordinary npz.
  with np.load(tmp_path / "out/balanced_train.labels.npz") as z:
    assert z["ids"].dtype.kind == "U" and len(z["ids"]) == 20
    assert z["offsets"][0] == 0 and z["offsets"][-1] == len(z["values"])
  # Resume: a second prepare rewrites nothing and gives the same manifest.
  again = _run(readers.audioset(tmp_path / "src"), tmp_path / "out", shard_size=6,
               num_workers=workers)
  assert {k: v for k, v in again.items() if k != "created"} == {
      k: v for k, v in m.items() if k != "created"}


def test_older_prepared_format_says_what_to_do(tmp_path):
  (tmp_path / "manifest.json").write_text(json.dumps({"format": "audiotl-arrayrecord/1"}))
  from audiotl_jax.errors import UserError
  with pytest.raises(UserError, match="older audiotl.*run prepare again"):
    PreparedDataset(tmp_path)
