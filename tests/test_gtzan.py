"""The GTZAN reader on small trees of real wav files: where the genre folders may be, a seeded split
stratified by genre, and a damaged download (an empty genre, stray files, a cut-off wav)."""
import collections

import pytest
import soundfile as sf

from audiotl_jax.data import readers
from audiotl_jax.data.shard_writer import prepare
from audiotl_jax.errors import UserError
from test_prepare import _check_consistent, _wav


def _genres(folder, genres=("blues", "metal", "reggae"), per_genre=10, ext="wav"):
  for g in genres:
    for i in range(per_genre):
      _wav(folder / g / f"{g}.{i:05d}.{ext}", seconds=0.1)


def test_layouts_and_split(tmp_path):
  _genres(tmp_path / "gtzan" / "genres")
  listing = readers.get_reader("gtzan")(tmp_path / "gtzan")
  assert listing.task == "multiclass" and not listing.problems
  assert [c["id"] for c in listing.classes] == ["blues", "metal", "reggae"]
  assert {it.id for it in listing.items} >= {"blues.00000", "reggae.00009"}
  by = collections.Counter((it.split, it.labels[0]) for it in listing.items)
  for g in ("blues", "metal", "reggae"):
    assert (by[("train", g)], by[("validation", g)], by[("test", g)]) == (8, 1, 1)
  # The genres folder itself is a root too, with the same split (ids, not paths, are carved).
  same = readers.gtzan(tmp_path / "gtzan" / "genres")
  assert [(it.id, it.split) for it in same.items] == [(it.id, it.split) for it in listing.items]
  assert readers.gtzan(tmp_path / "gtzan", seed=1).items != listing.items
  wide = readers.gtzan(tmp_path / "gtzan", validation_fraction=0.2, test_fraction=0.3)
  assert collections.Counter(it.split for it in wide.items) == {
      "train": 15, "validation": 6, "test": 9}
  # The Kaggle copy: Data/genres_original, wav; the original archive: .au files.
  _genres(tmp_path / "kaggle" / "Data" / "genres_original", genres=("jazz", "pop"), per_genre=3)
  for root in (tmp_path / "kaggle", tmp_path / "kaggle" / "Data"):
    assert [c["id"] for c in readers.gtzan(root).classes] == ["jazz", "pop"]
  au = tmp_path / "au" / "genres"
  for i in range(3):
    au.joinpath("rock").mkdir(parents=True, exist_ok=True)
    sf.write(au / "rock" / f"rock.{i:05d}.au", [0.1] * 800, 8000, format="AU")
  listing = readers.gtzan(tmp_path / "au")
  assert [it.path.suffix for it in listing.items] == [".au"] * 3 and not listing.problems
  assert readers.default_options("gtzan") == {
      "validation_fraction": 0.1, "test_fraction": 0.1, "seed": 0}


def test_damaged_download(tmp_path):
  root = tmp_path / "gtzan"
  genres = root / "genres"
  _genres(genres, genres=("blues", "classical"), per_genre=4)
  (genres / "jazz").mkdir()                                     # a genre that never arrived
  (genres / "blues" / "notes.txt").write_text("not audio")
  (genres / "blues" / ".DS_Store").write_bytes(b"\0\0")       # hidden: not the dataset's
  _wav(genres / "blues" / "rock.00001.wav", seconds=0.1)       # another genre's clip
  _wav(genres / "blues" / "blues.00000.au", seconds=0.1)       # blues.00000 a second time
  _wav(genres / "stray.wav", seconds=0.1)                      # outside any genre folder
  cut = genres / "classical" / "classical.00002.wav"
  _wav(cut, seconds=0.5, subtype="PCM_16")
  cut.write_bytes(cut.read_bytes()[:len(cut.read_bytes()) // 2])
  (genres / "classical" / "classical.00003.wav").write_bytes(b"")  # a 0-byte file
  listing = readers.gtzan(root)
  assert [c["id"] for c in listing.classes] == ["blues", "classical"]  # jazz: no files
  reasons = sorted((p["id"], p["reason"].split(" (")[0].split(";")[0]) for p in listing.problems)
  assert reasons == [("blues.00000", "duplicate id"),
                     ("jazz", "no audio files in this genre folder"),
                     ("notes.txt", "not an audio file"),
                     ("rock.00001.wav", "name is not blues.<number>.<ext>"),
                     ("stray.wav", "audio outside a genre folder")]
  assert all(p["dropped"] for p in listing.problems)
  assert len(listing.items) == 8  # the cut and the empty file are listed: prepare judges audio
  m = prepare(listing, tmp_path / "out", sample_rate=16000, clip_seconds=0.5, num_workers=1,
              progress=False, shard_size=4)
  ds = _check_consistent(listing, tmp_path / "out", m)
  skipped = {s["id"]: s["reason"] for s in ds.log("skipped")}
  assert skipped == {"classical.00003": "empty (0-byte file)"}
  notes = {n["id"]: n["note"] for n in ds.log("notes")}
  assert notes["classical.00002"].startswith("truncated: the header promises")
  assert sum(ds.num_records(s) for s in ds.splits) == 7


def test_not_gtzan(tmp_path):
  with pytest.raises(UserError, match="GTZAN root .*: no genre folders"):
    readers.gtzan(tmp_path)
  (tmp_path / "genres" / "blues").mkdir(parents=True)
  (tmp_path / "genres" / "blues" / "readme.txt").write_text("nothing here")
  with pytest.raises(UserError, match="no audio files in the genre folders"):
    readers.gtzan(tmp_path)
  with pytest.raises(UserError, match="is a file; this needs a folder"):
    readers.gtzan(tmp_path / "genres" / "blues" / "readme.txt")
