"""Readers on tiny fake layouts -> prepare -> manifest, shards and labels index agree."""
import collections
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiotl_jax.data import readers, records
from audiotl_jax.data.dataset import PreparedDataset
from audiotl_jax.data.shard_writer import prepare
from audiotl_jax.errors import UserError
from audiotl_jax.data.ontology import Ontology


def _wav(path: Path, seconds=0.25, sr=8000, channels=1, value=None, subtype=None):
  path.parent.mkdir(parents=True, exist_ok=True)
  n = int(seconds * sr)
  rng = np.random.default_rng(len(str(path)))
  x = rng.uniform(-0.5, 0.5, (n, channels)) if value is None else np.full((n, channels), value)
  sf.write(path, x.astype(np.float32), sr, subtype=subtype)
  return path


def _run(listing, out, **kw):
  kw.setdefault("num_workers", 1)
  kw.setdefault("progress", False)
  return prepare(listing, out, **kw)


def _dropped(listing) -> int:
  return len({(p["split"], p["id"], p["path"]) for p in listing.problems if p["dropped"]})


def _check_consistent(listing, out: Path, manifest: dict):
  """Records + skipped + dropped rows = listed; counts, shards and labels index agree."""
  ds = PreparedDataset(out)
  items = list(listing.items)
  n_records = sum(s["num_records"] for s in manifest["splits"].values())
  assert n_records + manifest["counts"]["skipped"] == len(items)
  assert len(list(ds.log("skipped"))) == manifest["counts"]["skipped"]
  index = {c["id"]: i for i, c in enumerate(listing.classes)}
  for split in ds.splits:
    src, labels, ids = ds.source(split), ds.labels(split), ds.ids(split)
    assert len(src) == len(labels) == len(ids) == ds.num_records(split)
    counts = np.zeros(ds.num_classes, int)
    for i in range(len(src)):
      rec = records.decode(src[i])
      assert rec["id"] == ids[i]
      np.testing.assert_array_equal(rec["labels"], labels[i])
      counts[labels[i]] += 1
    assert counts.tolist() == manifest["splits"][split]["class_counts"]
    expected = {it.id: sorted(index[x] for x in it.labels) for it in items if it.split == split}
    for i, id_ in enumerate(ids):
      assert sorted(labels[i].tolist()) == expected[id_]
  return ds


def _official_csv(path: Path, rows):
  lines = ["# Segments csv created Sun Mar  5 10:54:31 2017",
           f"# num_ytids={len(rows)}, num_segs={len(rows)}, num_unique_labels=527, "
           "num_positive_labels=9",
           "# YTID, start_seconds, end_seconds, positive_labels"]
  lines += [f'{y}, {s:.3f}, {e:.3f}, "{",".join(ls)}"' for y, s, e, ls in rows]
  path.write_text("\n".join(lines) + "\n")


def test_audioset(tmp_path):
  root = tmp_path / "as"
  root.mkdir()
  _official_csv(root / "bal.csv", [
      ("aaaaaaaaaaa", 30, 40, ["/m/09x0r", "/m/04rlf"]),  # Y-named wav
      ("b_bbbbbbb-b", 0, 10, ["/m/04rlf"]),  # ytid-only flac, `_` and `-` in the id
      ("ccccccccccc", 10, 20, ["/m/09x0r"]),  # no file
      ("ddddddddddd", 0, 10, ["/m/zzzzz"]),  # only an unknown MID: dropped
      ("eeeeeeeeeee", 0, 10, ["/m/09x0r", "/m/yyyyy"]),  # kept with its known label
  ])
  _official_csv(root / "ev.csv", [("fffffffffff", 30, 40, ["/m/04rlf"])])
  _wav(root / "audio/balanced_train/Yaaaaaaaaaaa_30.000_40.000.wav")
  _wav(root / "audio/balanced_train/b_bbbbbbb-b.flac")
  _wav(root / "audio/balanced_train/Yeeeeeeeeeee_0.000_10.000.wav")
  _wav(root / "audio/eval/fffffffffff_30000_40000.wav")  # millisecond naming
  listing = readers.get_reader("audioset")(root, {"balanced_train": "bal.csv", "eval": "ev.csv"})
  assert len(list(listing.items)) == 4  # AudioSet items stream; a pass fills `problems`
  reasons = sorted((p["id"], p["reason"], p["dropped"]) for p in listing.problems)
  assert reasons == [("ccccccccccc_10.000_20.000", "missing file", True),
                     ("ddddddddddd_0.000_10.000", "unknown label /m/zzzzz", True),
                     ("eeeeeeeeeee_0.000_10.000", "unknown label /m/yyyyy", False)]
  m = _run(listing, tmp_path / "out")
  assert len(m["classes"]) == 527 and m["task"] == "multilabel"
  assert m["classes"][0] == {"index": 0, "id": "/m/09x0r", "name": "Speech"}
  assert {s: v["num_records"] for s, v in m["splits"].items()} == {"balanced_train": 3, "eval": 1}
  assert m["splits"]["eval"]["total_seconds"] == pytest.approx(0.25)
  assert sum(v["num_records"] for v in m["splits"].values()) + _dropped(listing) == 6
  onto = Ontology.load()
  counts = m["splits"]["balanced_train"]["class_counts"]
  assert counts[onto.class_index["/m/09x0r"]] == 2 and counts[onto.class_index["/m/04rlf"]] == 2
  assert sum(counts) == 4
  _check_consistent(listing, tmp_path / "out", m)


def test_speech_commands(tmp_path):
  root = tmp_path / "sc"
  for word in ("yes", "no"):
    for spk in ("s1", "s2", "s3"):
      _wav(root / word / f"{spk}_nohash_0.wav", sr=16000, seconds=0.2)
  _wav(root / "_background_noise_/noise.wav")
  (root / "validation_list.txt").write_text("yes/s2_nohash_0.wav\nno/s2_nohash_0.wav\n")
  (root / "testing_list.txt").write_text("yes/s3_nohash_0.wav\nno/s3_nohash_0.wav\n"
                                         "no/s9_nohash_0.wav\n")
  listing = readers.speech_commands(root)
  assert [c["id"] for c in listing.classes] == ["no", "yes"]
  assert [(p["id"], p["reason"], p["row"]) for p in listing.problems] == [
      ("no/s9_nohash_0.wav", "missing file", 3)]
  m = _run(listing, tmp_path / "out")
  assert {s: v["num_records"] for s, v in m["splits"].items()} == {
      "train": 2, "validation": 2, "test": 2}
  assert m["splits"]["train"]["class_counts"] == [1, 1]
  _check_consistent(listing, tmp_path / "out", m)
  assert [c["id"] for c in readers.speech_commands(root, words=["yes"]).classes] == ["yes"]
  with pytest.raises(UserError, match="maybe"):
    readers.speech_commands(root, words=["maybe"])


def test_dcase2018(tmp_path):
  root = tmp_path / "dc"
  meta, train, evaluate = [], [], []
  for scene in ("airport", "bus"):
    for loc in range(5):
      for seg in range(3):
        name = f"audio/{scene}-barcelona-{loc}-{seg}-a.wav"
        _wav(root / name, seconds=0.1)
        meta.append(f"{name}\t{scene}\t{scene[:1]}-{loc}\ta")
        (evaluate if loc == 4 else train).append(f"{name}\t{scene}")
  (root / "meta.csv").write_text(
      "filename\tscene_label\tidentifier\tsource_label\n" + "\n".join(meta) + "\n")
  (root / "evaluation_setup").mkdir()
  (root / "evaluation_setup/fold1_train.csv").write_text(
      "filename\tscene_label\n" + "\n".join(train) + "\n")
  (root / "evaluation_setup/fold1_evaluate.csv").write_text(
      "filename\tscene_label\n" + "\n".join(evaluate) + "\n")
  listing = readers.dcase2018_task1(root)
  assert not listing.problems and [c["id"] for c in listing.classes] == ["airport", "bus"]
  loc = {n: f"{s}-{x}" for n, s, x, _ in (r.split("\t") for r in meta)}
  by_split = {}
  for it in listing.items:
    by_split.setdefault(it.split, []).append(it)
  assert len(by_split["test"]) == 6 and len(by_split["validation"]) == 6  # a location per scene
  assert ({loc[it.id] for it in by_split["train"]}
          .isdisjoint(loc[it.id] for it in by_split["validation"]))
  assert sorted(it.labels[0] for it in by_split["validation"]) == ["airport"] * 3 + ["bus"] * 3
  assert readers.dcase2018_task1(root, seed=0).items == listing.items
  m = _run(listing, tmp_path / "out")
  assert m["splits"]["train"]["class_counts"] == [9, 9]
  _check_consistent(listing, tmp_path / "out", m)


def test_csv_manifest_resampling_and_bad_files(tmp_path):
  d = tmp_path / "data"
  rows = []
  for i in range(10):
    _wav(d / f"a{i}.wav", seconds=0.5, sr=8000)
    rows.append(f"a{i}.wav,cat")
  _wav(d / "stereo.wav", seconds=0.3, sr=44100, channels=2, value=0.25)
  rows.append("stereo.wav,cat;dog")
  (d / "corrupt.wav").write_bytes(np.random.default_rng(0).bytes(2000))
  sf.write(d / "empty.wav", np.zeros(0, np.float32), 16000)
  _wav(d / "nan.wav", value=np.nan, subtype="FLOAT")
  rows += ["corrupt.wav,dog", "empty.wav,dog", "nan.wav,dog", "gone.wav,dog", "a0.wav,"]
  (d / "list.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
  listing = readers.get_reader("csv")(d / "list.csv")
  assert listing.task == "multilabel"
  assert sorted((p["row"], p["reason"]) for p in listing.problems) == [(16, "missing file"),
                                                                       (17, "no label")]
  # A file that vanished after listing is skipped by prepare too.
  listing.items.append(readers.Item("late", d / "late.wav", ("cat",), "train"))
  m = _run(listing, tmp_path / "out", shard_size=4)
  skipped = {s["id"]: s["reason"] for s in PreparedDataset(tmp_path / "out").log("skipped")}
  assert skipped.keys() == {"corrupt.wav", "empty.wav", "nan.wav", "late"}
  assert skipped["late"] == "missing file" and skipped["nan.wav"].startswith("non-finite")
  assert skipped["empty.wav"].startswith("empty")
  assert skipped["corrupt.wav"].startswith("unreadable")
  assert {s["split"] for s in PreparedDataset(tmp_path / "out").log("skipped")} <= set(m["splits"])
  assert sum(v["num_records"] for v in m["splits"].values()) == 11
  ds = _check_consistent(listing, tmp_path / "out", m)
  audio = {}
  for split in ds.splits:
    for i in range(ds.num_records(split)):
      rec = records.decode(ds.source(split)[i])
      audio[rec["id"]] = rec["audio"]
  assert abs(len(audio["a1.wav"]) - 8000) <= 1  # 0.5 s at 8 kHz -> 16 kHz
  assert abs(len(audio["stereo.wav"]) - 4800) <= 1  # 0.3 s 44.1 kHz stereo -> 16 kHz mono
  assert np.median(audio["stereo.wav"]) == pytest.approx(0.25 * 32768, abs=2)
  # Fixed-length clips: padded at the end, or cropped from the start.
  m = _run(listing, tmp_path / "clip", clip_seconds=0.4, num_workers=2, shard_size=4)
  ds = PreparedDataset(tmp_path / "clip")
  lengths = {len(records.decode(ds.source(s)[i])["audio"])
             for s in ds.splits for i in range(ds.num_records(s))}
  assert lengths == {6400}


def test_csv_split_column_and_errors(tmp_path):
  _wav(tmp_path / "x.wav")
  _wav(tmp_path / "y.wav")
  (tmp_path / "l.csv").write_text("path,label,split\nx.wav,yes,train\ny.wav,no,test\n")
  listing = readers.csv_manifest(tmp_path / "l.csv")
  assert listing.task == "binary" and {it.split for it in listing.items} == {"train", "test"}
  for i in range(20):
    _wav(tmp_path / f"c{i}.wav", seconds=0.05)
  (tmp_path / "carve.csv").write_text(
      "path,label\n" + "".join(f"c{i}.wav,{'ab'[i % 2]}\n" for i in range(20)))
  listing = readers.csv_manifest(tmp_path / "carve.csv", seed=1)
  splits = collections.Counter((it.split, it.labels[0]) for it in listing.items)
  assert splits == {("train", "a"): 8, ("train", "b"): 8, ("validation", "a"): 1,
                    ("validation", "b"): 1, ("test", "a"): 1, ("test", "b"): 1}
  assert readers.csv_manifest(tmp_path / "carve.csv", seed=1).items == listing.items
  (tmp_path / "bad.csv").write_text("file,label\nx.wav,yes\n")
  with pytest.raises(UserError, match="bad.csv"):
    readers.csv_manifest(tmp_path / "bad.csv")
  with pytest.raises(UserError, match="unknown dataset reader 'nope'"):
    readers.get_reader("nope")


def test_resume(tmp_path):
  for i in range(6):
    _wav(tmp_path / f"w{i}.wav")
  (tmp_path / "l.csv").write_text(
      "path,label,split\n" + "".join(f"w{i}.wav,c{i % 2},train\n" for i in range(6)))
  listing = readers.csv_manifest(tmp_path / "l.csv")
  out = tmp_path / "out"
  first = _run(listing, out, shard_size=2)
  assert first["splits"]["train"]["shards"] == [f"train-0000{k}.array_record" for k in range(3)]
  mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.array_record")}
  second = _run(listing, out, shard_size=2)
  assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.array_record")} == mtimes
  assert {k: v for k, v in second.items() if k != "created"} == {
      k: v for k, v in first.items() if k != "created"}
  (out / "train-00001.json").unlink()
  _run(listing, out, shard_size=2)
  redone = {p.name for p in out.glob("*.array_record") if p.stat().st_mtime_ns != mtimes[p.name]}
  assert redone == {"train-00001.array_record"}
  assert json.loads((out / "manifest.json").read_text())["splits"] == first["splits"]
  _check_consistent(listing, out, first)


def test_prepared_dataset_errors(tmp_path):
  with pytest.raises(UserError, match=str(tmp_path / "nowhere")):
    PreparedDataset(tmp_path / "nowhere")
  (tmp_path / "empty").mkdir()
  with pytest.raises(UserError, match="no manifest.json"):
    PreparedDataset(tmp_path / "empty")
  (tmp_path / "empty/manifest.json").write_text("{}")
  with pytest.raises(UserError, match="expected format"):
    PreparedDataset(tmp_path / "empty")
  _wav(tmp_path / "x.wav")
  (tmp_path / "l.csv").write_text("path,label,split\nx.wav,a,train\n")
  _run(readers.csv_manifest(tmp_path / "l.csv"), tmp_path / "out")
  with pytest.raises(UserError, match="splits: train"):
    PreparedDataset(tmp_path / "out").labels("test")


_SLOW_PREPARE = """
import sys, time
from audiotl_jax.data import readers, shard_writer as prepare
real = prepare.load_clip
def slow(*args, **kw):  # a pace the test can kill in the middle of
  time.sleep(0.15)
  return real(*args, **kw)
prepare.load_clip = slow
prepare.prepare(readers.csv_manifest(sys.argv[1]), sys.argv[2], shard_size=2, num_workers=1,
                progress=False)
"""


def test_resume_after_kill(tmp_path):
  import os
  import signal
  import subprocess
  import sys
  import time
  for i in range(16):
    _wav(tmp_path / f"w{i}.wav", seconds=0.1)
  (tmp_path / "l.csv").write_text(
      "path,label,split\n" + "".join(f"w{i}.wav,c{i % 3},train\n" for i in range(16)))
  out = tmp_path / "out"
  env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
  proc = subprocess.Popen([sys.executable, "-c", _SLOW_PREPARE, str(tmp_path / "l.csv"),
                           str(out)], env=env)
  deadline = time.time() + 120
  while len(list(out.glob("train-*.json"))) < 3 and time.time() < deadline:
    assert proc.poll() is None, "prepare ended before it could be killed"
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  finished = {p.stem: p.with_suffix(".array_record").stat().st_mtime_ns
              for p in out.glob("train-*.json")}
  assert 3 <= len(finished) < 8 and not (out / "manifest.json").exists()
  listing = readers.csv_manifest(tmp_path / "l.csv")
  m = _run(listing, out, shard_size=2)
  assert {s: out.joinpath(f"{s}.array_record").stat().st_mtime_ns for s in finished} == finished
  assert m["splits"]["train"]["num_records"] == 16 and len(m["splits"]["train"]["shards"]) == 8
  assert not list(out.glob("*.tmp"))
  _check_consistent(listing, out, m)
