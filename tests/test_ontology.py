"""The AudioSet ontology, segment lists and subset selection, on the shipped metadata."""
import subprocess
import sys

import numpy as np
import pytest

from audiotl_jax.data import ontology as onto
from audiotl_jax.errors import UserError

BALANCED = onto.DEFAULT_DIR / "balanced_train_segments.csv"


@pytest.fixture(scope="module")
def ont():
  return onto.Ontology.load()


@pytest.mark.parametrize("name,count", [
    ("Animal", 65), ("Human sounds", 72), ("Natural sounds", 18), ("Speech", 8),
    ("Sounds of things", 176), ("Music", 150), ("Source-ambiguous sounds", 55),
    ("Channel, environment and background", 22)])
def test_subset_class_counts(ont, name, count):
  sub = ont.subset(name)
  assert len(sub) == count == sub.indices.size
  assert np.all(np.diff(sub.indices) > 0)
  assert [ont.classes[i] for i in sub.indices] == list(sub.mids)


def test_class_list_and_roots(ont):
  assert len(ont.classes) == 527 and len(ont.nodes) == 632
  assert ont.classes[0] == "/m/09x0r" and ont.class_names[0] == "Speech"
  assert ont.class_index["/m/09x0r"] == 0
  roots = [ont.nodes[m].name for m in ont.top_level()]
  assert len(roots) == 7 and {"Animal", "Music", "Human sounds"} <= set(roots)
  assert ont.branch_of(ont.find("Speech")) == {ont.find("Human sounds")}
  assert all(ont.branch_of(m) for m in ont.classes)


def test_find(ont):
  assert ont.find("/m/09x0r") == "/m/09x0r"
  assert ont.find("animal") == ont.find("Animal")
  assert ont.nodes[ont.find("  speech ")].name == "Speech"
  with pytest.raises(UserError, match="'Anmal'.*close matches: 'Animal'"):
    ont.find("Anmal")
  with pytest.raises(UserError, match="unknown AudioSet class"):
    ont.subset("Zzzqqq")


def test_descendants(ont):
  animal = ont.find("Animal")
  assert animal in ont.descendants(animal)
  assert animal not in ont.descendants(animal, include_self=False)
  assert ont.find("Bark") in ont.descendants("Animal")


def test_union_subset(ont):
  a, m = ont.subset("Animal"), ont.subset("Music")
  overlap = len(set(a.mids) & set(m.mids))
  union = ont.subset("Animal+Music")
  assert len(union) == 65 + 150 - overlap
  assert union.name == "Animal+Music"
  assert ont.subset(["animal", "music"]).mids == union.mids
  with pytest.raises(UserError, match="joined by"):
    ont.subset("Animal+")


def test_read_segments_shipped_and_official_format(ont, tmp_path):
  segments = onto.read_segments(BALANCED)
  assert len(segments) == 22160
  assert segments[0] == onto.Segment("--PJHxphWEs", 30.0, 40.0, ("/m/09x0r", "/t/dd00088"))
  lines = BALANCED.read_text().splitlines()[1:]
  official = tmp_path / "official.csv"
  official.write_text(
      "# Segments csv created Sun Mar  5 10:54:31 2017\n"
      "# num_ytids=22160, num_segs=22160, num_unique_labels=527, num_positive_labels=52882\n"
      "# YTID, start_seconds, end_seconds, positive_labels\n"
      + "".join(l.replace(",", ", ", 3) + "\n" for l in lines))
  assert official.read_text().splitlines()[3].startswith("--PJHxphWEs, 30.000, 40.000, \"")
  assert onto.read_segments(official) == segments
  assert list(onto.iter_segments(official))[-1] == segments[-1]


@pytest.mark.parametrize("row,why", [
    ('abc, 1.0, "/m/09x0r"', "expected 4 columns"),
    ('abc, x, 2.0, "/m/09x0r"', "must be numbers"),
    ('abc, 1.0, 2.0, ""', "empty positive_labels"),
    ('abc, 3.0, 2.0, "/m/09x0r"', "start <= end")])
def test_bad_rows(tmp_path, row, why):
  path = tmp_path / "segs.csv"
  path.write_text('# header\nok1, 0.000, 10.000, "/m/09x0r"\n' + row + "\n")
  with pytest.raises(UserError, match=rf"segs\.csv, line 3: .*{why}"):
    onto.read_segments(path)
  segments, problems = onto.read_segments(path, on_error="collect")
  assert [s.ytid for s in segments] == ["ok1"]
  assert problems[0][0] == 3 and why in problems[0][1]


def test_read_segments_errors(tmp_path):
  with pytest.raises(UserError, match="does not exist"):
    onto.read_segments(tmp_path / "missing.csv")
  with pytest.raises(UserError, match="on_error"):
    onto.read_segments(BALANCED, on_error="ignore")


def test_fraction_indices_nested_and_deterministic():
  indices = np.arange(100, 1100)
  draws = [onto.fraction_indices(indices, f, seed=3) for f in (0.01, 0.03, 0.1, 0.3, 1.0)]
  assert [d.size for d in draws] == [10, 30, 100, 300, 1000]
  for small, big in zip(draws, draws[1:]):
    assert set(small) <= set(big)
  assert all(np.all(np.diff(d) > 0) for d in draws)
  np.testing.assert_array_equal(draws[1], onto.fraction_indices(indices, 0.03, seed=3))
  assert not np.array_equal(draws[1], onto.fraction_indices(indices, 0.03, seed=4))
  assert onto.fraction_indices(indices[:10], 0.01, seed=0).size == 1
  with pytest.raises(UserError, match="fraction"):
    onto.fraction_indices(indices, 0.0, seed=0)


def test_sample_classes_nested(ont):
  music = ont.subset("Music")
  small, big = onto.sample_classes(music, 5, seed=1), onto.sample_classes(music, 20, seed=1)
  assert len(small) == 5 and len(big) == 20
  assert set(small.mids) <= set(big.mids) <= set(music.mids)
  assert np.all(np.diff(small.indices) > 0)
  assert onto.sample_classes(music, 5, seed=1).mids == small.mids
  with pytest.raises(UserError, match="cannot draw"):
    onto.sample_classes(music, 151, seed=1)


def test_record_selection(ont):
  speech = ont.subset("Speech")  # indices 0..7
  music_index = ont.class_index[ont.find("Music")]
  records = [np.array([0, music_index]), np.array([music_index]), np.array([], int),
             np.array([7]), np.array([3, 5])]
  np.testing.assert_array_equal(onto.subset_record_indices(records, speech), [0, 3, 4])
  np.testing.assert_array_equal(onto.restrict_labels([music_index, 5, 0], speech), [5, 0])
  assert onto.restrict_labels([music_index], speech).size == 0
  table = onto.subset_class_map(speech)
  assert table.dtype == np.int32 and table.shape == (527,)
  np.testing.assert_array_equal(table[:8], np.arange(8))
  assert table[music_index] == -1 and (table >= 0).sum() == 8
  animal = ont.subset("Animal")
  local = onto.restrict_labels(animal.indices[[4, 2]], animal)
  np.testing.assert_array_equal(local, [4, 2])
  np.testing.assert_array_equal(onto.subset_class_map(animal)[animal.indices[[4, 2]]], local)


def test_plan_on_shipped_list(ont):
  segments = onto.read_segments(BALANCED)
  rows = onto.plan(ont, segments, ["Animal+Music", "Speech"])
  branches = [r for r in rows if r["kind"] == "branch"]
  assert len(branches) == 7 and all(r["clips"] > 0 for r in branches)
  by_name = {r["name"]: r for r in rows}
  assert by_name["Animal+Music"]["classes"] == len(ont.subset("Animal+Music"))
  assert by_name["Speech"]["clips"] <= by_name["Human sounds"]["clips"]
  assert not any(r["kind"] == "unknown" for r in rows)
  text = onto.format_plan(rows)
  lines = text.splitlines()
  assert lines[0].split() == ["subset", "kind", "classes", "clips"]
  assert len(lines) == len(rows) + 2 and len({len(l) for l in lines}) == 1  # aligned
  assert "Channel, environment and background" in text
  counts = onto.label_counts(segments, ont)
  assert len(counts) == 527 and min(counts.values()) >= 59  # balanced: >= 59 clips a class


def test_plan_reports_unknown_mids(ont):
  segments = [onto.Segment("a", 0, 10, ("/m/09x0r",)), onto.Segment("b", 0, 10, ("/m/nope",)),
              onto.Segment("c", 0, 10, ("/m/nope", "/m/other", "/m/09x0r"))]
  rows = onto.plan(ont, segments)
  assert rows[-1]["kind"] == "unknown" and rows[-1]["clips"] == 2 and rows[-1]["classes"] == 2
  assert {r["name"]: r["clips"] for r in rows}["Human sounds"] == 2
  assert "outside the 527" in onto.format_plan(rows)


def test_label_set_similarity(ont):
  assert onto.label_set_similarity("Animal", "Animal", ont) == 1.0
  domestic = onto.label_set_similarity("Animal", "Domestic animals, pets", ont)
  assert 0 < domestic < 1
  assert onto.label_set_similarity("Animal", "Music", ont) < domestic
  assert onto.label_set_similarity(ont.subset("Speech"), "Vehicle", ont) == 0.0


def test_default_dir_env_override(tmp_path):
  code = "from audiotl_jax.data import ontology; print(ontology.DEFAULT_DIR)"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={"AUDIOTL_AUDIOSET_DIR": str(tmp_path), "PATH": ""})
  assert out.stdout.strip() == str(tmp_path)
  with pytest.raises(UserError, match="AUDIOTL_AUDIOSET_DIR"):
    onto.Ontology.load(tmp_path)
