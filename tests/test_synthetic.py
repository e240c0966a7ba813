"""Synthetic data: the real layouts, deterministic by seed, distinct acoustic families."""
import csv
import hashlib
import re
import time

import numpy as np
import pytest
import soundfile as sf

from audiotl_jax.data import ontology as onto
from audiotl_jax.data import synthetic
from audiotl_jax.errors import UserError

TINY = dict(num_classes_per_subset=2, clips_per_class=3, eval_clips_per_class=2)


@pytest.fixture(scope="module")
def ont():
  return onto.Ontology.load()


@pytest.fixture(scope="module")
def audioset(tmp_path_factory, ont):
  root = tmp_path_factory.mktemp("audioset")
  return root, synthetic.make_audioset(root, ontology=ont, seed=5, **TINY)


def _tree_hashes(root):
  return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(root.rglob("*")) if p.is_file()}


def test_audioset_layout(audioset, ont):
  root, summary = audioset
  text = (root / "balanced_train_segments.csv").read_text().splitlines()
  assert [l[0] for l in text[:3]] == ["#"] * 3
  assert text[2] == "# YTID, start_seconds, end_seconds, positive_labels"
  assert re.fullmatch(r'[\w-]{11}, \d+\.000, \d+\.000, "/[mt]/[\w,/]+"', text[3])
  allowed = set().union(*(ont.subset(s).mids for s in synthetic.DEFAULT_SUBSETS))
  generated = {m for mids in summary["classes"].values() for m in mids}
  assert len(generated) == 10 and generated <= allowed
  for split, csv_key, per in (("balanced_train", "train_csv", 3), ("eval", "eval_csv", 2)):
    segments = onto.read_segments(summary["paths"][csv_key])
    assert len(segments) == 10 * per
    assert all(len(s.ytid) == 11 for s in segments)
    for s in segments:
      assert set(s.labels) <= generated and len(s.labels) == len(set(s.labels))
      info = sf.info(str(root / "audio" / split / f"Y{s.ytid}_{s.start:.3f}_{s.end:.3f}.wav"))
      assert (info.samplerate, info.channels, info.subtype, info.frames) == (
          16000, 1, "PCM_16", 16000)
  train = {s.ytid for s in onto.read_segments(root / "balanced_train_segments.csv")}
  assert not train & {s.ytid for s in onto.read_segments(root / "eval_segments.csv")}
  # Each class carries its subset's family.
  for name, mids in summary["classes"].items():
    assert all(summary["families"][m] == name for m in mids)


def test_audioset_deterministic_and_cached(audioset, ont, tmp_path):
  root, _ = audioset
  again = synthetic.make_audioset(tmp_path / "a", ontology=ont, seed=5, **TINY)
  assert _tree_hashes(tmp_path / "a") == _tree_hashes(root)
  assert again["paths"]["train_csv"] == str(tmp_path / "a" / "balanced_train_segments.csv")
  other = synthetic.make_audioset(tmp_path / "b", ontology=ont, seed=6, **TINY)
  assert _tree_hashes(tmp_path / "b") != _tree_hashes(root)
  # Same arguments: nothing is rewritten. Different arguments: regenerated, no stale files.
  csv_path = tmp_path / "b" / "eval_segments.csv"
  mtime = csv_path.stat().st_mtime_ns
  assert synthetic.make_audioset(tmp_path / "b", ontology=ont, seed=6, **TINY) == other
  assert csv_path.stat().st_mtime_ns == mtime
  synthetic.make_audioset(tmp_path / "b", ontology=ont, seed=6, subsets=["Music"],
                          num_classes_per_subset=1, clips_per_class=1, eval_clips_per_class=1)
  assert len(list((tmp_path / "b" / "audio" / "eval").iterdir())) == 1
  (tmp_path / "user").mkdir()
  (tmp_path / "user" / "notes.txt").write_text("mine")
  with pytest.raises(UserError, match="not empty"):
    synthetic.make_audioset(tmp_path / "user", ontology=ont, **TINY)


def test_families_differ(ont, tmp_path):
  summary = synthetic.make_audioset(
      tmp_path, ontology=ont, subsets=("Music", "Natural sounds"), num_classes_per_subset=3,
      clips_per_class=4, eval_clips_per_class=1, multi_label_prob=0.0)
  family = summary["families"]
  stats = {"Music": [], "Natural sounds": []}
  for s in onto.read_segments(summary["paths"]["train_csv"]):
    name = f"Y{s.ytid}_{s.start:.3f}_{s.end:.3f}.wav"
    x, _ = sf.read(tmp_path / "audio" / "balanced_train" / name)
    frames = np.lib.stride_tricks.sliding_window_view(x, 1024)[::512] * np.hanning(1024)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-12
    loud = power.sum(1) > np.median(power.sum(1))
    flatness = np.exp(np.log(power).mean(1)) / power.mean(1)
    # Harmonicity: the autocorrelation peak at pitch lags (2.5-12.5 ms), from the power spectrum.
    ac = np.fft.irfft(power, axis=1)
    harmonic = ac[:, 40:200].max(1) / ac[:, 0]
    stats[family[s.labels[0]]].append((flatness[loud].mean(), harmonic[loud].mean()))
  music, natural = (np.mean(stats[k], axis=0) for k in ("Music", "Natural sounds"))
  assert natural[0] > 10 * music[0]
  assert music[1] > natural[1] + 0.2


def test_speech_commands_layout(tmp_path):
  summary = synthetic.make_speech_commands(tmp_path, clips_per_word=6, speakers=10,
                                           noise_seconds=1.0)
  words = list(synthetic.DEFAULT_WORDS)
  assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == sorted(
      words + ["_background_noise_"])
  every = []
  for w in words:
    for f in (tmp_path / w).iterdir():
      assert re.fullmatch(r"[0-9a-f]{8}_nohash_\d+\.wav", f.name), f.name
      every.append(f"{w}/{f.name}")
  assert len(every) == 60
  lists = {}
  for part in ("validation", "testing"):
    lists[part] = (tmp_path / f"{part}_list.txt").read_text().splitlines()
    assert lists[part] and all((tmp_path / rel).is_file() for rel in lists[part])
  train = set(every) - set(lists["validation"]) - set(lists["testing"])
  # word/<speaker>_nohash_<n>.wav: the speaker is the part before the first underscore.
  groups = [{r.split("/")[1].split("_")[0] for r in g}
            for g in (train, lists["validation"], lists["testing"])]
  assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
  assert [len(g) for g in groups] == [8, 1, 1]
  assert summary["clips"] == {"train": len(train), "validation": len(lists["validation"]),
                              "testing": len(lists["testing"])}
  noise = sorted((tmp_path / "_background_noise_").glob("*.wav"))
  assert len(noise) >= 3 and all(sf.info(str(p)).frames == 16000 for p in noise)
  info = sf.info(str(tmp_path / lists["testing"][0]))
  assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
  assert len(set(map(tuple, summary["phonemes"].values()))) == len(words)


def _tsv(path):
  with open(path, newline="") as f:
    return list(csv.reader(f, delimiter="\t"))


def test_acoustic_scenes_layout(tmp_path):
  scenes = ("airport", "bus", "park")
  synthetic.make_acoustic_scenes(tmp_path, scenes=scenes, clips_per_scene=7,
                                 cities=("barcelona", "paris"), clip_seconds=1.0)
  meta = _tsv(tmp_path / "meta.csv")
  assert meta[0] == ["filename", "scene_label", "identifier", "source_label"]
  assert len(meta) == 1 + 21
  location = {}
  for filename, scene, identifier, source in meta[1:]:
    m = re.fullmatch(r"audio/([a-z_]+)-([a-z]+)-(\d+)-(\d+)-a\.wav", filename)
    assert m and m[1] == scene and f"{m[2]}-{m[3]}" == identifier and source == "a"
    assert sf.info(str(tmp_path / filename)).frames == 16000
    location[filename] = identifier
  setup = tmp_path / "evaluation_setup"
  train, evaluate = _tsv(setup / "fold1_train.csv"), _tsv(setup / "fold1_evaluate.csv")
  test = _tsv(setup / "fold1_test.csv")
  assert train[0] == evaluate[0] == ["filename", "scene_label"] and test[0] == ["filename"]
  assert sorted(r[0] for r in train[1:] + evaluate[1:]) == sorted(location)
  assert [r[0] for r in test[1:]] == [r[0] for r in evaluate[1:]]
  assert not {location[r[0]] for r in train[1:]} & {location[r[0]] for r in evaluate[1:]}
  assert {r[1] for r in train[1:]} == {r[1] for r in evaluate[1:]} == set(scenes)
  assert 0.15 < (len(evaluate) - 1) / 21 < 0.45


def test_demo_data_test_scale(tmp_path):
  start = time.perf_counter()
  summary = synthetic.make_demo_data(tmp_path, scale="test")
  assert time.perf_counter() - start < 3.0
  assert {p.name for p in tmp_path.iterdir()} >= {"audioset", "speech_commands",
                                                   "acoustic_scenes", ".synthetic.json"}
  assert onto.read_segments(summary["audioset"]["paths"]["eval_csv"])
  start = time.perf_counter()
  assert synthetic.make_demo_data(tmp_path, scale="test") == summary
  assert time.perf_counter() - start < 0.5
  with pytest.raises(UserError, match="unknown synthetic data scale 'huge'"):
    synthetic.make_demo_data(tmp_path, scale="huge")
