"""The `tfds_speech_commands` reader on a real TFDS build: TFDS's own `speech_commands` builder
runs on tiny archives in the published layout (its two downloads are swapped for local files),
writing ArrayRecord, and the reader -> prepare -> records path is checked against both TFDS and the
source WAVs. Needs the `tfds` extra; skipped without it.
"""
import io
import tarfile
from unittest import mock

import numpy as np
import pytest
import soundfile as sf

tfds = pytest.importorskip("tensorflow_datasets")

from audiotl_jax.data import readers, records  # noqa: E402
from audiotl_jax.data.dataset import PreparedDataset
from audiotl_jax.data.shard_writer import prepare  # noqa: E402
from audiotl_jax.errors import UserError  # noqa: E402

SR = 16000
# Published layout of speech_commands_v0.02.tar.gz: a folder per word (here two of the ten
# keywords and one "unknown" word), lists naming the validation and test files, and long noise
# recordings that TFDS cuts into 1 s `_silence_` examples (running_tap.wav goes to validation).
WORDS = {"yes": 3, "no": 3, "bed": 3}
VALIDATION = ["yes/yes1_nohash_0.wav", "bed/bed1_nohash_0.wav"]
TESTING = ["yes/yes2_nohash_0.wav", "no/no2_nohash_0.wav"]
NOISE = {"running_tap.wav": 2.0, "white_noise.wav": 2.5}
# The test-set archive has its own folders, `_silence_` and `_unknown_` included.
TEST_SET = ["yes/t0_nohash_0.wav", "_silence_/s0.wav", "_unknown_/u0.wav"]


def _tar(path, files: dict):
  with tarfile.open(path, "w:gz") as t:
    for name, data in files.items():
      info = tarfile.TarInfo("./" + name)  # the published archives list `./word/file.wav`
      info.size = len(data)
      t.addfile(info, io.BytesIO(data))


def _build(data_dir, archives, file_format):
  """TFDS's speech_commands builder, with its downloads answered by the local archives."""
  with mock.patch.object(tfds.download.DownloadManager, "download",
                         lambda self, urls: list(archives)):
    builder = tfds.builder("speech_commands", data_dir=str(data_dir), file_format=file_format)
    builder.download_and_prepare()
  return builder


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """A real ArrayRecord build, and per split what it must hold: {audio bytes: word folder}."""
  root = tmp_path_factory.mktemp("tfds")
  rng = np.random.default_rng(0)
  expected = {"train": {}, "validation": {}, "test": {}}

  def wav(seconds=1.0):
    # Random samples: every clip (and every noise crop) is unique, so audio identifies it.
    x = rng.integers(-30000, 30000, int(SR * seconds), dtype=np.int16)
    f = io.BytesIO()
    sf.write(f, x, SR, subtype="PCM_16", format="WAV")
    return f.getvalue(), x

  files = {}
  for word, n in WORDS.items():
    for k in range(n):
      name = f"{word}/{word}{k}_nohash_0.wav"
      files[name], x = wav()
      split = "validation" if name in VALIDATION else "test" if name in TESTING else "train"
      if split != "test":  # the test split comes from the test-set archive only
        expected[split][x.tobytes()] = word
  for name, seconds in NOISE.items():
    files[f"_background_noise_/{name}"], x = wav(seconds)
    split = "validation" if name == "running_tap.wav" else "train"
    for start in range(0, len(x) - SR, SR // 2):  # TFDS's crops: 1 s every 0.5 s
      expected[split][x[start:start + SR].tobytes()] = "_silence_"
  files["_background_noise_/README.md"] = b"noise"
  files["validation_list.txt"] = "\n".join(VALIDATION).encode() + b"\n"
  files["testing_list.txt"] = "\n".join(TESTING).encode() + b"\n"
  files["LICENSE"] = b"CC-BY-4.0"
  test_files = {}
  for name in TEST_SET:
    test_files[name], x = wav()
    expected["test"][x.tobytes()] = name.split("/")[0]
  archives = (root / "speech_commands_v0.02.tar.gz", root / "speech_commands_test_set_v0.02.tar.gz")
  _tar(archives[0], files)
  _tar(archives[1], test_files)
  builder = _build(root / "data", archives, "array_record")
  return {"root": root, "archives": archives, "data_dir": root / "data", "builder": builder,
          "expected": expected}


def test_listing_is_tfds(built):
  builder, data_dir = built["builder"], built["data_dir"]
  listing = readers.get_reader("tfds_speech_commands")(data_dir)
  names = builder.info.features["label"].names
  assert [c["id"] for c in listing.classes] == names
  assert names[-2:] == ["_silence_", "_unknown_"]
  items = list(listing.items)
  for split, info in builder.info.splits.items():
    mine = [it for it in items if it.split == split]
    assert len(mine) == info.num_examples == len(built["expected"][split]) > 0, split
    source = tfds.data_source("speech_commands", split=split, data_dir=str(data_dir),
                              download=False)
    assert [it.labels for it in mine] == [(names[int(source[i]["label"])],)
                                          for i in range(len(source))]
  assert sorted({it.split for it in items}) == ["test", "train", "validation"]
  # The version may be named; without it, the same (latest) build is read.
  pinned = readers.tfds_speech_commands(data_dir, name=f"speech_commands:{builder.version}")
  assert list(pinned.items) == items
  assert listing.source["name"] == f"speech_commands:{builder.version}"


def test_prepare_reads_tfds_audio(built, tmp_path):
  builder, data_dir, expected = built["builder"], built["data_dir"], built["expected"]
  listing = readers.tfds_speech_commands(data_dir)
  m = prepare(listing, tmp_path / "out", sample_rate=SR, clip_seconds=1.0, num_workers=1,
              progress=False)
  total = sum(len(e) for e in expected.values())
  assert m["counts"]["rows"] == m["counts"]["records"] == total
  assert m["counts"]["skipped"] == m["counts"]["dropped"] == 0
  ds = PreparedDataset(tmp_path / "out")
  names = [c["id"] for c in ds.classes]
  for split, info in builder.info.splits.items():
    assert ds.num_records(split) == info.num_examples, split
    source = tfds.data_source("speech_commands", split=split, data_dir=str(data_dir),
                              download=False)
    records_ = ds.source(split)
    seen, labels = {}, []
    for k in range(len(records_)):
      r = records.decode(records_[k])
      # Record k is TFDS's example k: same label, same samples (int16 round trip, no rescaling).
      i = int(r["id"].split("/")[1])
      assert r["id"] == f"{split}/{k}" and i == k
      ex = source[i]
      assert names[int(r["labels"][0])] == builder.info.features["label"].int2str(ex["label"])
      np.testing.assert_array_equal(r["audio"], ex["audio"])
      seen[r["audio"].tobytes()] = names[int(r["labels"][0])]
      labels.append(r["labels"].tolist())
    # And against the source WAVs: each split holds exactly its files, with the label TFDS
    # gives their folder (`bed` and the test set's `_unknown_` folder are `_unknown_`).
    want = {audio: (w if w in names else "_unknown_") for audio, w in expected[split].items()}
    assert seen == want, split
    assert [ls.tolist() for ls in ds.labels(split)] == labels


def test_cli_prepare_with_workers_then_fine_tune(built, tmp_path):
  """No code: `audiotl prepare` with the tfds reader (spawned workers reopen the TFDS source
  themselves), then `audiotl finetune` for two steps on what it wrote."""
  from audiotl_jax.cli import main as cli
  out = tmp_path / "prepared"
  assert cli(["prepare", "--config", "configs/prepare.py:reader=tfds_speech_commands",
              f"--config.root={built['data_dir']}", "--config.num_workers=2",
              "--config.shard_size=8", "--config.progress=false", "--workdir", str(out)]) == 0
  ds = PreparedDataset(out)
  assert {s: ds.num_records(s) for s in ds.splits} == {
      s: info.num_examples for s, info in built["builder"].info.splits.items()}
  assert cli(["finetune", "--config", "configs/finetune.py:model=cnn:tiny,runlocal",
              f"--config.data.dir={out}", "--config.batch_size=8", "--config.total_steps=2",
              "--config.eval_every=2", "--config.frontend.n_mels=32", "--config.progress=false",
              "--workdir", str(tmp_path / "ft")]) == 0
  assert (tmp_path / "ft/results.json").exists()


def test_not_prepared(tmp_path):
  with pytest.raises(UserError, match="not prepared under .*tfds build speech_commands "
                                      "--file_format=array_record"):
    readers.tfds_speech_commands(tmp_path)
  with pytest.raises(UserError, match="TFDS data_dir: .* is not a directory"):
    readers.tfds_speech_commands(tmp_path / "missing")


def test_tfrecord_build_is_refused(built, tmp_path):
  # The default `tfds build` writes TFRecord, which has no random access.
  _build(tmp_path / "data", built["archives"], "tfrecord")
  with pytest.raises(UserError, match=r"stored as tfrecord.*--file_format=array_record"):
    readers.tfds_speech_commands(tmp_path / "data")
