"""Prepare fed everything a real download holds: damaged files and bad CSV rows.

Each is read (possibly with a note) or skipped/dropped with its reason; nothing crashes, nothing
vanishes: every data row of the CSV is a record, a skipped file or a dropped row.
"""
import numpy as np
import soundfile as sf

from audiotl_jax.data import readers, records
from audiotl_jax.data.dataset import PreparedDataset
from audiotl_jax.data.shard_writer import prepare
from test_prepare import _check_consistent, _wav

SPEECH, MUSIC = "/m/09x0r", "/m/04rlf"


def _ytid(i: int) -> str:
  return f"robust{i:05d}"


def test_damaged_files_and_bad_rows(tmp_path):
  root = tmp_path / "as"
  audio = root / "audio" / "balanced_train"
  audio.mkdir(parents=True)
  good = _wav(tmp_path / "good.wav", seconds=0.5, sr=8000, subtype="PCM_16").read_bytes()
  files = {  # ytid -> what is on disk
      "fine": lambda p: p.write_bytes(good),
      "truncated": lambda p: p.write_bytes(good[:len(good) // 2]),
      "corrupt": lambda p: p.write_bytes(b"RIFF" + np.random.default_rng(1).bytes(3000)),
      "zero_length": lambda p: p.write_bytes(b""),
      "nan": lambda p: sf.write(p, np.full(2000, np.nan, np.float32), 8000, subtype="FLOAT"),
      "clipped": lambda p: sf.write(p, np.full(2000, 1.5, np.float32), 8000, subtype="FLOAT"),
      "eight_channel": lambda p: sf.write(p, np.tile(np.linspace(-.8, .8, 8), (4000, 1)), 16000),
      "8khz": lambda p: sf.write(p, np.full(4000, 0.25, np.float32), 8000),
      "192khz": lambda p: sf.write(p, np.full(96000, 0.25, np.float32), 192000),
      "directory": lambda p: p.mkdir(),
  }
  rows, ytid = [], {}
  for i, (kind, write) in enumerate(files.items()):
    ytid[kind] = _ytid(i)
    write(audio / f"Y{ytid[kind]}_0.000_10.000.wav")
    rows.append(f'{ytid[kind]}, 0.000, 10.000, "{SPEECH}"')
  bad_rows = {
      "unknown MID": f'{_ytid(50)}, 0.000, 10.000, "/m/nonesuch"',
      "unknown MID, kept": f'{_ytid(53)}, 0.000, 10.000, "{MUSIC},/m/nonesuch"',
      "missing column": f'{_ytid(51)}, 0.000, "{SPEECH}"',
      "broken quoting": f'{_ytid(52)}, 0.000, 10.000, "{SPEECH},{MUSIC}',
      "duplicate id": f'{ytid["fine"]}, 0.000, 10.000, "{MUSIC}"',
  }
  rows += list(bad_rows.values())
  _wav(audio / f"{_ytid(53)}.wav")
  (root / "balanced_train_segments.csv").write_text(
      "# Segments csv\n# YTID, start_seconds, end_seconds, positive_labels\n"
      + "\n".join(rows) + "\n")
  (root / "eval_segments.csv").write_text("# empty eval list\n")
  listing = readers.audioset(root)
  m = prepare(listing, tmp_path / "out", sample_rate=16000, clip_seconds=None, num_workers=1,
              progress=False, shard_size=4)
  # Every data row is accounted for, once.
  assert m["counts"]["rows"] == len(rows)
  assert m["counts"]["records"] + m["counts"]["skipped"] + m["counts"]["dropped"] == len(rows)
  ds = PreparedDataset(tmp_path / "out")
  skipped = {s["id"].split("_")[0]: s["reason"] for s in ds.log("skipped")}
  assert skipped == {
      ytid["corrupt"]: skipped[ytid["corrupt"]], ytid["zero_length"]: "empty (0-byte file)",
      ytid["nan"]: "non-finite samples (NaN/Inf)",
      ytid["directory"]: "a directory, not an audio file"}
  assert skipped[ytid["corrupt"]].startswith("unreadable: ")
  problems = list(ds.log("problems"))
  dropped = sorted(p["reason"].split(" (")[0] for p in problems if p["dropped"])
  assert dropped == ["broken quoting", "duplicate id", "expected 4 columns",
                     "unknown label /m/nonesuch"]
  kept = [p for p in problems if not p["dropped"]]
  assert [p["reason"] for p in kept] == ["unknown label /m/nonesuch"]
  notes = {n["id"].split("_")[0]: n["note"] for n in ds.log("notes")}
  assert notes.keys() == {ytid["truncated"], ytid["clipped"]}
  assert notes[ytid["truncated"]].startswith("truncated: the header promises 8000 bytes")
  assert notes[ytid["clipped"]].startswith("clipped: 2000 samples")
  ds = _check_consistent(listing, tmp_path / "out", m)
  audio_of = {}
  for i in range(ds.num_records("balanced_train")):
    rec = records.decode(ds.source("balanced_train")[i])
    audio_of[rec["id"].split("_")[0]] = rec["audio"]
  assert set(audio_of) == {ytid[k] for k in ("fine", "truncated", "clipped", "eight_channel",
                                             "8khz", "192khz")} | {_ytid(53)}
  assert len(audio_of[ytid["fine"]]) == 8000
  assert abs(len(audio_of[ytid["truncated"]]) - 4000) < 50
  assert (audio_of[ytid["clipped"]] == 32767).mean() > 0.99  # saturated, not wrapped
  np.testing.assert_allclose(audio_of[ytid["eight_channel"]], 0, atol=1)  # mean of +-x pairs
  for kind in ("8khz", "192khz"):  # both 0.5 s, resampled to 16 kHz
    a = audio_of[ytid[kind]]
    assert abs(len(a) - 8000) <= 1 and np.median(a) == 8192
  assert PreparedDataset(tmp_path / "out").num_records("balanced_train") == 7
