"""A real recording set in the csv and folders layouts: validation carved from a train/test CSV,
split typos, source sample rates said, damaged manifests and a root of the wrong kind named."""
import collections
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiotl_jax import config as config_lib
from audiotl_jax.data import readers
from audiotl_jax.data.dataset import PreparedDataset
from audiotl_jax.data.shard_writer import prepare
from audiotl_jax.errors import UserError
from audiotl_jax.stages import prepare as prepare_stage


def _wav(path: Path, sr: int, seconds=0.05):
  path.parent.mkdir(parents=True, exist_ok=True)
  x = np.random.default_rng(len(str(path))).uniform(-0.5, 0.5, int(seconds * sr))
  sf.write(path, x.astype(np.float32), sr)


def _recordings(root: Path, n_train=20, n_test=4, rate_of=lambda i: 16000, extra=()):
  """A train/test CSV over wavs in `root`: classes "bird" and "frog", alternating."""
  rows = []
  for split, n in (("train", n_train), ("test", n_test)):
    for i in range(n):
      name = f"{split}{i:02d}.wav"  # string order = row order, as in folders
      _wav(root / name, rate_of(i))
      rows.append(f"{name},{'bird' if i % 2 else 'frog'},{split}")
  (root / "l.csv").write_text("path,label,split\n" + "\n".join([*rows, *extra]) + "\n")
  return root / "l.csv"


def _prepare(listing, out):
  return prepare(listing, out, sample_rate=16000, clip_seconds=0.05, num_workers=1,
                 progress=False, shard_size=8)


# --------------------------------------------------------------- csv: validation and split names
def test_csv_train_test_carves_validation_like_folders(tmp_path):
  csv = _recordings(tmp_path / "csv")
  listing = readers.csv_manifest(csv)
  by = collections.Counter((it.split, it.labels[0]) for it in listing.items)
  assert by == {("train", "bird"): 9, ("train", "frog"): 9, ("validation", "bird"): 1,
                ("validation", "frog"): 1, ("test", "bird"): 2, ("test", "frog"): 2}
  # The same recordings as split folders: the same rows go to validation.
  folders = tmp_path / "folders"
  for it in listing.items:
    split = "train" if it.split == "validation" else it.split
    _wav(folders / split / it.labels[0] / it.id, 16000)
  carved = {it.id.rpartition("/")[2] for it in readers.class_folders(folders).items
            if it.split == "validation"}
  assert carved == {it.id for it in listing.items if it.split == "validation"}
  m = _prepare(listing, tmp_path / "out")
  assert set(m["splits"]) == {"train", "validation", "test"}
  assert m["source"]["validation_fraction"] == 0.1


def test_csv_validation_fraction_is_honoured(tmp_path):
  listing = readers.csv_manifest(_recordings(tmp_path), validation_fraction=0.3, seed=2)
  n = collections.Counter(it.split for it in listing.items)
  assert n == {"train": 14, "validation": 6, "test": 4}
  assert readers.csv_manifest(tmp_path / "l.csv", validation_fraction=0.3, seed=2).items \
      == listing.items


def test_csv_explicit_validation_split_is_kept(tmp_path):
  csv = _recordings(tmp_path, extra=["v0.wav,bird,validation", "v1.wav,frog,validation"])
  _wav(tmp_path / "v0.wav", 16000)
  _wav(tmp_path / "v1.wav", 16000)
  listing = readers.csv_manifest(csv, validation_fraction=0.5)
  assert collections.Counter(it.split for it in listing.items) == {
      "train": 20, "validation": 2, "test": 4}
  assert {it.id for it in listing.items if it.split == "validation"} == {"v0.wav", "v1.wav"}


def test_csv_split_typo_names_row_and_value(tmp_path):
  csv = _recordings(tmp_path, extra=["train00.wav,frog,tset"])
  with pytest.raises(UserError) as e:
    readers.csv_manifest(csv)
  msg = str(e.value)
  assert "\n" not in msg and str(csv) in msg and "row 26" in msg and "'tset'" in msg
  assert "train, validation, test" in msg


# ------------------------------------------------------------------------ source sample rates
def test_resampled_audio_is_said_in_manifest_and_summary(tmp_path, capsys):
  csv = _recordings(tmp_path, n_train=12, n_test=3, rate_of=lambda i: 44100 if i < 9 else 16000)
  m = _prepare(readers.csv_manifest(csv), tmp_path / "out")
  assert m["source_sample_rates"] == {"16000": 3, "44100": 12}
  said = json.loads((tmp_path / "out/manifest.json").read_text())["source_sample_rates"]
  assert said == m["source_sample_rates"]
  out = capsys.readouterr().out
  line = [s for s in out.splitlines() if s.strip().startswith("resampled")]
  assert len(line) == 1 and "12 of 15" in line[0] and "44100 Hz" in line[0]
  assert "16000" in line[0]


def test_summary_stays_quiet_when_every_clip_is_at_the_target_rate(tmp_path, capsys):
  csv = _recordings(tmp_path / "a", n_train=6, n_test=2)
  m = _prepare(readers.csv_manifest(csv), tmp_path / "out")
  assert m["source_sample_rates"] == {"16000": 8}
  quiet = capsys.readouterr().out.splitlines()
  (tmp_path / "b").mkdir()
  csv = _recordings(tmp_path / "b", n_train=6, n_test=2, rate_of=lambda i: 8000)
  _prepare(readers.csv_manifest(csv), tmp_path / "out_b")
  loud = capsys.readouterr().out.splitlines()
  assert not [s for s in quiet if s.strip().startswith("resampled") or " Hz" in s]
  assert len(loud) == len(quiet) + 1


# ------------------------------------------------------------------------------ damaged manifests
@pytest.fixture
def prepared_csv(tmp_path):
  _prepare(readers.csv_manifest(_recordings(tmp_path / "raw", n_train=6, n_test=2)),
           tmp_path / "out")
  return tmp_path / "out"


def _edit_manifest(out: Path, edit) -> None:
  path = out / "manifest.json"
  m = json.loads(path.read_text())
  edit(m)
  path.write_text(json.dumps(m))


def test_manifest_without_splits_is_named_at_open(prepared_csv):
  _edit_manifest(prepared_csv, lambda m: m.pop("splits"))
  with pytest.raises(UserError) as e:
    PreparedDataset(prepared_csv)
  msg = str(e.value)
  assert "\n" not in msg and "manifest.json" in msg and "'splits'" in msg


def test_manifest_with_fewer_classes_than_its_counts_is_named_at_open(prepared_csv):
  _edit_manifest(prepared_csv, lambda m: m["classes"].pop())
  with pytest.raises(UserError) as e:
    PreparedDataset(prepared_csv)
  msg = str(e.value)
  assert "\n" not in msg and "manifest.json" in msg and "'classes' lists 1" in msg


def test_labels_beyond_the_classes_are_named_when_loaded(prepared_csv):
  def drop_class(m):
    m["classes"].pop()
    for s in m["splits"].values():
      s["class_counts"].pop()
  _edit_manifest(prepared_csv, drop_class)
  ds = PreparedDataset(prepared_csv)
  with pytest.raises(UserError) as e:
    ds.labels("train")
  msg = str(e.value)
  assert "\n" not in msg and "manifest.json" in msg and "train.labels.npz" in msg
  assert "label 1" in msg and "'classes' lists 1" in msg


# ----------------------------------------------------------------------- root of the wrong kind
def _stage(reader: str, root: Path, workdir: Path):
  config = config_lib.load(f"configs/prepare.py:reader={reader}")
  with config.unlocked():
    config.root = str(root)
    config.num_workers = 1
    config.progress = False
  return prepare_stage.run(config, workdir)


def test_csv_reader_given_a_folder_says_it_takes_a_csv_file(tmp_path):
  csv = _recordings(tmp_path / "data", n_train=2, n_test=2)
  with pytest.raises(UserError) as e:
    _stage("csv", csv.parent, tmp_path / "out")
  msg = str(e.value)
  assert "is a directory" in msg and "CSV file" in msg and "does not exist" not in msg
  with pytest.raises(UserError, match="is a directory"):
    readers.csv_manifest(csv.parent)


def test_folder_reader_given_a_file_says_it_needs_a_folder(tmp_path):
  csv = _recordings(tmp_path / "data", n_train=2, n_test=2)
  with pytest.raises(UserError) as e:
    _stage("folders", csv, tmp_path / "out")
  msg = str(e.value)
  assert "is a file" in msg and "folder" in msg and "config key 'root'" in msg
  with pytest.raises(UserError, match="is a file"):
    readers.class_folders(csv)


def test_shards_kept_from_an_older_prepare_count_as_unknown_rate(tmp_path, capsys):
  listing = readers.csv_manifest(_recordings(tmp_path / "raw", n_train=6, n_test=2))
  out = tmp_path / "out"
  _prepare(listing, out)
  for side in out.glob("*-*.json"):  # sidecars as an older prepare wrote them
    d = json.loads(side.read_text())
    d.pop("source_rates")
    side.write_text(json.dumps(d))
  capsys.readouterr()
  m = _prepare(listing, out)
  assert m["source_sample_rates"] == {"unknown": 8}
  line = [s for s in capsys.readouterr().out.splitlines() if "source rate unknown" in s]
  assert len(line) == 1 and "8 records" in line[0] and "resampled" not in line[0]


def test_pretrain_selection_names_a_misspelt_train_split(prepared_csv):
  import ml_collections
  from audiotl_jax.data import selection
  dcfg = ml_collections.ConfigDict(dict(train_split="tarin", test_split="test", subset="",
                                        num_classes=0, fraction=1.0, val_fraction=0.1, seed=0))
  with pytest.raises(UserError, match="'data.train_split' = 'tarin'.*splits: .*train"):
    selection.pretrain(PreparedDataset(prepared_csv), dcfg)
