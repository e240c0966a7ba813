"""Synthetic data in the studies' layouts: each tree read by its own reader with the expected
classes and splits and no problems, byte-identical by seed, with classes that sound apart."""
import collections
import csv
import hashlib
import json
import re
import time

import numpy as np
import pytest
import soundfile as sf

from audiotl_jax.data import readers, synthetic
from audiotl_jax.errors import UserError

NEW = ("dcase2020_task1a", "dcase2018_task3", "gtzan", "esc50", "cough")


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
  root = tmp_path_factory.mktemp("synthetic")
  start = time.perf_counter()
  summary = synthetic.make_demo_data(root, scale="test", datasets=NEW)
  assert time.perf_counter() - start < 3.0  # five datasets; each well under a second
  return root, summary


def _tree_hashes(root):
  return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(root.rglob("*")) if p.is_file()}


def _features(path):
  """Level-free log energies in 16 log-spaced bands: their mean and spread over 32 ms frames."""
  x, sr = sf.read(str(path))
  frames = np.lib.stride_tricks.sliding_window_view(x, 512)[::256] * np.hanning(512)
  power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
  f, edges = np.fft.rfftfreq(512, 1 / sr), np.geomspace(60, sr / 2, 17)
  bands = np.log(np.stack([power[:, (f >= a) & (f < b)].sum(1)
                           for a, b in zip(edges, edges[1:])], 1) + 1e-10)
  bands -= bands.mean()
  return np.concatenate([bands.mean(0), bands.std(0)])


def _nearest_mean_accuracy(items):
  """Leave-one-out accuracy of a nearest-class-mean rule on `_features`: a cheap lower bound on
  how far the classes sound apart."""
  x = np.stack([_features(it.path) for it in items])
  x = (x - x.mean(0)) / (x.std(0) + 1e-9)
  y = np.array([it.labels[0] for it in items])
  right = 0
  for i in range(len(y)):
    rest = np.arange(len(y)) != i
    classes = sorted(set(y[rest]))
    means = np.stack([x[rest & (y == c)].mean(0) for c in classes])
    right += classes[int(np.argmin(((means - x[i]) ** 2).sum(1)))] == y[i]
  return right / len(y)


def _band_fraction(path, lo, hi):
  x, sr = sf.read(str(path))
  power, f = np.abs(np.fft.rfft(x)) ** 2, np.fft.rfftfreq(len(x), 1 / sr)
  return power[(f >= lo) & (f < hi)].sum() / power.sum()


def _auroc(pos, neg):
  return float(np.mean([[p > n for n in neg] for p in pos]))


def _splits(listing):
  return collections.Counter((it.split, it.labels[0]) for it in listing.items)


def test_dcase2020_task1a_scenes_and_devices(trees):
  root, summary = trees
  listing = readers.get_reader("dcase2020_task1a")(summary["dcase2020_task1a"]["root"])
  assert not listing.problems
  assert [c["id"] for c in listing.classes] == sorted(synthetic.DEFAULT_SCENES)
  by = _splits(listing)
  for scene in synthetic.DEFAULT_SCENES:  # three locations: train, validation, test
    assert by[("train", scene)] == by[("validation", scene)] == by[("test", scene)] == 2
  devices = collections.defaultdict(set)
  for it in listing.items:
    m = re.fullmatch(r"audio/([a-z_]+)-([a-z]+)-(\d+)-(\d+)-(a|b|c|s[1-3])\.wav", it.id)
    assert m and m[1] == it.labels[0], it.id
    devices[it.split].add(m[5])
  assert devices["train"] | devices["validation"] == set(synthetic.DEVICES)
  assert devices["test"] == set(synthetic.DEVICES)
  with open(root / "dcase2020_task1a" / "meta.csv", newline="") as f:
    meta = list(csv.reader(f, delimiter="\t"))
  assert meta[0] == ["filename", "scene_label", "identifier", "source_label"]
  assert all(r[0].endswith(f"-{r[3]}.wav") for r in meta[1:])
  assert _nearest_mean_accuracy(listing.items) > 0.3  # chance: 0.1


def test_dcase2020_devices_are_distinct_filters(trees):
  """The same segment through device a and through another device: each other device has its
  own response (mean over its segments), and every one of them loses the bass."""
  audio = trees[0] / "dcase2020_task1a" / "audio"
  segments = collections.defaultdict(dict)
  for p in audio.iterdir():
    segment, device = p.stem.rsplit("-", 1)
    segments[segment][device] = p
  edges = np.geomspace(50, 7500, 13)
  response = collections.defaultdict(list)

  def bands(path):
    x, sr = sf.read(str(path))
    power, f = np.abs(np.fft.rfft(x)) ** 2, np.fft.rfftfreq(len(x), 1 / sr)
    return np.array([power[(f >= a) & (f < b)].sum() for a, b in zip(edges, edges[1:])])

  for devices in segments.values():
    ref = bands(devices["a"])
    for device, path in devices.items():
      if device != "a":
        h = 10 * np.log10(bands(path) / ref)
        response[device].append(h - h[5])  # relative to the 1 kHz band
  assert set(response) == set(synthetic.DEVICES[1:])
  mean = {d: np.mean(h, axis=0) for d, h in response.items()}
  assert all(m[0] < -5 for m in mean.values()), {d: m[0] for d, m in mean.items()}
  for a in mean:
    for b in mean:
      assert a == b or np.abs(mean[a] - mean[b]).max() > 3, (a, b)


def test_bird_detection_sets_and_calls(trees):
  root = trees[1]["dcase2018_task3"]["root"]
  listing = readers.get_reader("dcase2018_task3")(root)
  assert not listing.problems and listing.task == "binary"
  by = collections.Counter((it.split, it.id.split("/")[0], it.labels[0]) for it in listing.items)
  assert by[("test", "BirdVox-DCASE-20k", "0")] == by[("test", "BirdVox-DCASE-20k", "1")] == 6
  assert {k[2] for k in by if k[0] == "validation"} == {"0", "1"}
  assert not any(s == "test" and d != "BirdVox-DCASE-20k" for s, d, _ in by)
  assert listing.source["sets"] == {"BirdVox-DCASE-20k": {"no bird": 6, "bird": 6},
                                    "ff1010bird": {"no bird": 9, "bird": 3},
                                    "warblrb10k": {"no bird": 3, "bird": 9}}
  # Calls put energy where birds sing (1-2.5 kHz): clips with birds have more of it there.
  items = list(listing.items)
  share = {it.id: _band_fraction(it.path, 1000, 2500) for it in items}
  pos = [share[it.id] for it in items if it.labels[0] == "1"]
  neg = [share[it.id] for it in items if it.labels[0] == "0"]
  assert _auroc(pos, neg) > 0.8


def test_gtzan_genres(trees):
  root = trees[1]["gtzan"]["root"]
  for name in synthetic.GENRES:
    assert sorted(p.name for p in (trees[0] / "gtzan" / "genres" / name).iterdir()) == [
        f"{name}.{i:05d}.wav" for i in range(4)]
  listing = readers.get_reader("gtzan")(root)
  assert not listing.problems
  assert [c["id"] for c in listing.classes] == list(synthetic.GENRES)
  by = _splits(listing)
  for genre in synthetic.GENRES:
    assert (by[("train", genre)], by[("validation", genre)], by[("test", genre)]) == (2, 1, 1)
  assert _nearest_mean_accuracy(listing.items) > 0.35  # chance: 0.1


def test_esc50_folds(trees):
  root = trees[1]["esc50"]["root"]
  categories = synthetic.DEFAULT_CATEGORIES[:6]
  assert len(set(trees[1]["esc50"]["families"].values())) == 4  # all four families
  for fold in range(1, 6):
    listing = readers.get_reader("esc50")(root, fold=fold)
    assert not listing.problems
    assert {c["id"] for c in listing.classes} == set(categories)
    assert collections.Counter(it.split for it in listing.items) == {
        "train": 18, "validation": 6, "test": 6}
    assert {it.id.split("-")[0] for it in listing.items if it.split == "test"} == {str(fold)}
  esc10 = readers.esc50(root, esc10=True)
  assert {c["id"] for c in esc10.classes} == set(categories)  # the first ten are ESC-10's
  assert _nearest_mean_accuracy(readers.esc50(root).items) > 0.6  # chance: 1/6


def test_cough_manifest(trees):
  summary = trees[1]["cough"]
  listing = readers.get_reader("csv")(summary["paths"]["manifest"])
  assert not listing.problems and listing.task == "binary"
  assert [c["id"] for c in listing.classes] == ["0", "1"]  # "1", cough, is the positive class
  by = _splits(listing)
  assert by == {("train", "0"): 12, ("train", "1"): 12, ("validation", "0"): 4,
                ("validation", "1"): 4, ("test", "0"): 4, ("test", "1"): 4}
  speakers = {s: {it.id.split("/")[1].split("_")[0] for it in listing.items if it.split == s}
              for s in ("train", "validation", "test")}
  assert sum(map(len, speakers.values())) == len(set().union(*speakers.values())) == 10
  assert _nearest_mean_accuracy(listing.items) > 0.7


@pytest.mark.parametrize("name", list(synthetic.GENERATORS))
def test_same_seed_same_bytes(tmp_path, name):
  a = synthetic.make_demo_data(tmp_path / "a", scale="test", seed=7, datasets=[name])
  b = synthetic.make_demo_data(tmp_path / "b", scale="test", seed=7, datasets=[name])
  hashes = _tree_hashes(tmp_path / "a" / name)
  assert hashes == _tree_hashes(tmp_path / "b" / name)
  assert sum(k.endswith(".wav") for k in hashes) >= 20
  assert a[name]["root"] != b[name]["root"]
  synthetic.make_demo_data(tmp_path / "c", scale="test", seed=8, datasets=[name])
  other = _tree_hashes(tmp_path / "c" / name)
  wavs = [k for k in hashes if k.endswith(".wav")]
  assert sum(hashes[k] != other.get(k) for k in wavs) > len(wavs) // 2


def test_demo_data_datasets_and_stamps(tmp_path):
  with pytest.raises(UserError, match="unknown synthetic dataset 'gtzn'; known: acoustic_scen"):
    synthetic.make_demo_data(tmp_path, scale="test", datasets=["gtzan", "gtzn"])
  assert not tmp_path.joinpath(".synthetic.json").exists()  # refused before writing anything
  first = synthetic.make_demo_data(tmp_path, scale="test", datasets=["gtzan"])
  assert set(first) == {"gtzan"}
  assert sorted(p.name for p in tmp_path.iterdir()) == [".synthetic.json", "gtzan"]
  wav = tmp_path / "gtzan" / "genres" / "jazz" / "jazz.00000.wav"
  mtime = wav.stat().st_mtime_ns
  # Another set of datasets adds what is missing and keeps what is there.
  both = synthetic.make_demo_data(tmp_path, scale="test", datasets=["esc50", "gtzan"])
  assert list(both) == ["esc50", "gtzan"] and both["gtzan"] == first["gtzan"]
  assert wav.stat().st_mtime_ns == mtime
  # A dataset whose build did not finish is never taken for a whole one: it is rebuilt.
  stamp = tmp_path / "esc50" / ".synthetic.json"
  stamp.write_text(json.dumps({**json.loads(stamp.read_text()), "complete": False}))
  next(p for p in (tmp_path / "esc50" / "audio").iterdir()).unlink()
  synthetic.make_demo_data(tmp_path, scale="test", datasets=["esc50"])
  assert not readers.esc50(tmp_path / "esc50").problems
  # Another seed wipes the root: no dataset of the old seed survives beside the new ones.
  synthetic.make_demo_data(tmp_path, scale="test", seed=1, datasets=["esc50"])
  assert sorted(p.name for p in tmp_path.iterdir()) == [".synthetic.json", "esc50"]
