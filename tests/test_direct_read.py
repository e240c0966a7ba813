"""`data/direct.py` reads what ArrayRecord + `records.decode` read, byte for byte, falls back to
them where it must, and names the shard when one is damaged."""
import itertools
import json
import os
import pickle
import shutil

from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter
import grain
import msgpack
import numpy as np
import pytest

from audiotl_jax.data import dataset, direct, pipeline, records
from audiotl_jax.errors import UserError

UNCOMPRESSED = "group_size:1,uncompressed"  # what `audiotl prepare` writes
CLASSES = 6
CLIP = 40000  # samples in a pipeline batch row


def _clips(n_small: int, seed: int = 0) -> list[dict]:
  """Clips of many sizes: empty, tiny, msgpack's bin8/16/32 edges (127/128, 32767/32768
  samples), several 64 KiB blocks long, and many short ones, so that block headers fall inside
  chunk headers, record heads, audio and labels."""
  rng = np.random.default_rng(seed)
  sizes = [0, 1, 2, 3, 127, 128, 32767, 32768, 32769, 65536, 100001, 200000]
  sizes += rng.integers(0, 300, n_small).tolist()
  return [{"id": f"clip{i}" + "é" * (i % 5) + "x" * int(rng.integers(0, 40)),
           "audio": rng.integers(-32768, 32768, n).astype(np.int16),
           "labels": sorted(set(rng.integers(0, CLASSES, i % 4).tolist()))}
          for i, n in enumerate(sizes)]


def _write(path, clips, options=UNCOMPRESSED, raw=()):
  """One shard of `clips` (encoded as `audiotl prepare` does), then the `raw` records as given."""
  writer = ArrayRecordWriter(str(path), options)
  for c in clips:
    writer.write(records.encode(id=c["id"], audio=c["audio"], labels=c["labels"]))
  for r in raw:
    writer.write(r)
  writer.close()
  return str(path)


def _source(path, enabled=True) -> direct.DirectSource:
  src = grain.sources.ArrayRecordDataSource([str(path)])
  return direct.DirectSource(src, [str(path)], [len(src)], enabled=enabled)


def _row(clip, start, length) -> np.ndarray:
  row = np.full(length, 12345, np.int16)  # no stale value may survive `copy_into`
  clip.copy_into(row, start)
  return row


def _expected(audio, start, length) -> np.ndarray:
  crop = audio[start:start + length]
  return np.concatenate([crop, np.zeros(length - len(crop), np.int16)])


def test_every_record_reads_as_arrayrecord_decodes_it(tmp_path):
  clips = _clips(3000)
  long_id = dict(clips[5], id="y" * (direct.HEAD + 10))  # too long for the head: read as before
  other = msgpack.packb({"labels": [1], "audio": b"\x01\x00\x02\x00", "id": "reordered"})
  path = _write(tmp_path / "a.array_record", clips + [long_id], raw=[other])
  reader = ArrayRecordReader(path)
  src = _source(path)
  assert src.mapped()
  shard = src._shard(0)  # pylint: disable=protected-access
  assert len(shard.chunks) == reader.num_records() == len(clips) + 2
  mapped = 0
  for i in range(reader.num_records()):
    ref = records.decode(reader.read([i])[0])
    clip = src.clip(i)
    mapped += clip.mapped
    assert clip.id == ref["id"] and clip.num_samples == len(ref["audio"])
    assert clip.labels.dtype == np.int32 and np.array_equal(clip.labels, ref["labels"])
    n = clip.num_samples
    # Odd starts: a block header then cuts samples in two, at other places.
    for start, size in {(0, n), (0, n + 5), (1, 7), (n // 3, max(n // 2, 1)), (max(n - 1, 0), 4)}:
      np.testing.assert_array_equal(_row(clip, start, size), _expected(ref["audio"], start, size),
                                    err_msg=f"record {i}, crop [{start}, +{size})")
  assert mapped == len(clips)  # all but the long id and the other layout came from the map
  # The cases this test is for did occur: a chunk header, and audio, cut by a block header.
  u = shard.chunks % direct.USABLE
  assert (u > direct.USABLE - direct.CHUNK_HEADER).sum() >= 1
  assert ((u + shard.sizes) // direct.USABLE > 0).sum() >= 10


@pytest.mark.parametrize("options", ["group_size:1", "group_size:4,uncompressed"])
def test_shards_it_does_not_map_read_the_same_through_arrayrecord(tmp_path, options):
  clips = _clips(200, seed=1)
  plain = _source(_write(tmp_path / "plain.array_record", clips))
  other = _source(_write(tmp_path / "other.array_record", clips, options))
  remote = _source(tmp_path / "plain.array_record")
  remote.paths = ["gs://bucket/plain.array_record"]  # object storage is never mapped
  assert plain.mapped() and not other.mapped() and not remote.mapped()
  for i in range(len(clips)):
    a, b, c = plain.clip(i), other.clip(i), remote.clip(i)
    assert a.mapped and not b.mapped and not c.mapped
    for clip in (b, c):
      assert clip.id == a.id and np.array_equal(clip.labels, a.labels)
      np.testing.assert_array_equal(_row(clip, 3, 500), _row(a, 3, 500))


def test_pickled_source_maps_again_in_the_new_process(tmp_path):
  clips = _clips(50, seed=2)
  src = _source(_write(tmp_path / "a.array_record", clips))
  assert src.mapped()
  copy = pickle.loads(pickle.dumps(src))  # as Grain sends it to a worker: no mmap inside
  assert copy._mapped == {}  # pylint: disable=protected-access
  for i in range(len(clips)):
    np.testing.assert_array_equal(_row(copy.clip(i), 0, 300), _expected(clips[i]["audio"], 0, 300))


def _one_line_naming(e, path, *also):
  msg = str(e.value)
  assert "\n" not in msg and str(path) in msg and "audiotl prepare" in msg, msg
  for word in also:
    assert word in msg, msg


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
  """An intact shard of big and small records, and where record 11 (200000 samples) lies:
  {part: its usable offset} for its chunk header, the record, its labels' key and its end."""
  path = _write(tmp_path_factory.mktemp("intact") / "s.array_record", _clips(100, seed=3))
  src = _source(path)
  src.mapped()
  m = src._shard(0)  # pylint: disable=protected-access
  chunk, size = int(m.chunks[11]), int(m.sizes[11])
  record = chunk + direct.CHUNK_HEADER + 5  # compression, sizes' size, the size (3 bytes)
  _, audio, n = records.fast_head(src[11])
  assert n == 400000 and len(src[11]) == size
  return path, {"chunk header": chunk, "record": record, "labels key": record + audio + n,
                "middle": record + size // 2}


def _damaged_copy(shard, tmp_path):
  path = tmp_path / "s.array_record"
  shutil.copy(shard[0], path)
  return path, _source(path)  # counted while intact: the damage comes after the run started


def _file_pos(u):
  return next(direct._pieces(u, 1))[0]  # pylint: disable=protected-access


@pytest.mark.parametrize("where", ["block header", "block boundary", "record", "postscript",
                                   "last byte", "empty"])
def test_truncated_shard_is_named(shard, tmp_path, where):
  path, src = _damaged_copy(shard, tmp_path)
  size = os.path.getsize(path)
  at = {"block header": 2 * direct.BLOCK + 10, "block boundary": 3 * direct.BLOCK,
        "record": _file_pos(shard[1]["middle"]), "postscript": size - direct.BLOCK + 30,
        "last byte": size - 1, "empty": 0}[where]
  os.truncate(path, at)
  with pytest.raises(UserError) as e:
    src.clip(0)
  # Found when the shard is opened, as `PreparedDataset.verify` words it: not at a record.
  _one_line_naming(e, path, "is empty (0 bytes)" if where == "empty" else "is unreadable (")


def test_shard_truncated_while_mapped_is_named_with_the_record(shard, tmp_path):
  path, src = _damaged_copy(shard, tmp_path)
  src.clip(0)  # mapped now
  os.truncate(path, 3 * direct.BLOCK)
  with pytest.raises(UserError) as e:
    src.clip(11)  # reading the map past the new end would be SIGBUS, not an error
  _one_line_naming(e, path, "record 11", "truncated")


def test_deleted_shard_is_named(shard, tmp_path):
  path, src = _damaged_copy(shard, tmp_path)
  os.unlink(path)
  with pytest.raises(UserError) as e:
    src.clip(3)
  _one_line_naming(e, path, "missing")


@pytest.mark.parametrize("where, offset", [("chunk header", 8), ("record", 1), ("labels key", 3)])
def test_corrupted_record_is_named_with_its_index(shard, tmp_path, where, offset):
  """Damage to what the direct read parses (here the data size, the id's key, the labels' key)
  sends the record through ArrayRecord, whose hash check fails: the error names the record."""
  path, src = _damaged_copy(shard, tmp_path)
  data = bytearray(path.read_bytes())
  data[_file_pos(shard[1][where] + offset)] ^= 0x5a
  path.write_bytes(bytes(data))
  assert np.array_equal(src.clip(10).labels, records.decode(src[10])["labels"])  # others read
  with pytest.raises(UserError) as e:
    src.clip(11)
  _one_line_naming(e, path, "record 11")


# ------------------------------------------------------------------------ through the pipeline
def _prepared(root, clips, options=UNCOMPRESSED, shard_size=40) -> dataset.PreparedDataset:
  """A prepared folder of `clips` in shards of `shard_size`, as `audiotl prepare` lays it out."""
  root.mkdir(parents=True)
  names = []
  for k in range(0, len(clips), shard_size):
    names.append(f"train-{k // shard_size:05d}.array_record")
    _write(root / names[-1], clips[k:k + shard_size], options)
  labels = [c["labels"] for c in clips]
  np.savez(root / "train.labels.npz", ids=np.asarray([c["id"] for c in clips]),
           offsets=np.cumsum([0] + [len(x) for x in labels]).astype(np.int64),
           values=np.asarray(list(itertools.chain(*labels)), np.int32))
  for name in dataset.LOGS:
    (root / f"{name}.jsonl").write_text("")
  (root / "manifest.json").write_text(json.dumps({
      "format": dataset.FORMAT, "task": "multilabel", "sample_rate": 16000,
      "classes": [{"index": i, "id": str(i), "name": str(i)} for i in range(CLASSES)],
      "splits": {"train": {"shards": names, "num_records": len(clips),
                           "shard_records": [len(clips[k:k + shard_size])
                                             for k in range(0, len(clips), shard_size)]}},
      "logs": {name: f"{name}.jsonl" for name in dataset.LOGS}}))
  return dataset.PreparedDataset(root)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
  """The same 100 clips (0 to 120000 samples: shorter and longer than CLIP, up to two blocks
  and more) prepared uncompressed and with zstd, as before issue 13."""
  rng = np.random.default_rng(4)
  lengths = [0, 1, CLIP - 1, CLIP, CLIP + 1, 3 * CLIP] + rng.integers(0, 120000, 94).tolist()
  clips = [dict(c, audio=rng.integers(-32768, 32768, n).astype(np.int16))
           for c, n in zip(_clips(88, seed=4), lengths)]
  root = tmp_path_factory.mktemp("pipeline")
  return (_prepared(root / "uncompressed", clips),
          _prepared(root / "zstd", clips, options="group_size:1"))


def _train(ds, steps, **kw):
  it = pipeline.train_iterator(ds, "train", batch_size=8, clip_samples=CLIP, seed=5,
                               process_index=0, process_count=1, **kw)
  return list(itertools.islice(it, steps))


def _eval(ds):
  return list(pipeline.eval_batches(ds, "train", batch_size=8, clip_samples=CLIP,
                                    process_index=1, process_count=2))


def _same(a: list[dict], b: list[dict]) -> None:
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      assert x[key].dtype == y[key].dtype and np.array_equal(x[key], y[key]), key


def test_pipeline_batches_are_the_same_with_and_without_it(datasets, monkeypatch):
  uncompressed, zstd = datasets
  assert uncompressed.source("train").mapped() and not zstd.source("train").mapped()
  train, evals = _train(uncompressed, 26), _eval(uncompressed)  # 26 batches: two epochs and more
  assert {int(b["audio"].any(axis=1).sum()) for b in train} != {8}  # some clips are empty
  assert any(not m.all() for m in (b["mask"] for b in evals))  # and eval pads its last batch
  _same(_train(zstd, 26), train)
  _same(_eval(zstd), evals)
  monkeypatch.setenv("AUDIOTL_DIRECT_READ", "0")
  assert not uncompressed.source("train").mapped()
  _same(_train(uncompressed, 26), train)
  _same(_eval(uncompressed), evals)


def test_worker_processes_read_the_same_batches(datasets):
  uncompressed, _ = datasets
  _same(_train(uncompressed, 4, worker_count=1), _train(uncompressed, 4))
