"""Each published layout, faked in miniature, through its reader, prepare, the pipeline and a
two-step fine-tune; AudioSet's name forms, nesting and "what you have" report."""
import collections
import itertools

import numpy as np
import pytest

from audiotl_jax.data import pipeline, readers
from audiotl_jax.data.dataset import PreparedDataset
from audiotl_jax.data.shard_writer import prepare
from audiotl_jax.errors import UserError
from audiotl_jax.data.ontology import Ontology
from test_prepare import _check_consistent, _official_csv, _wav

SPEECH, MUSIC, DOG = "/m/09x0r", "/m/04rlf", "/m/0bt9lr"


def _prepare(listing, out, clip=0.5):
  return prepare(listing, out, sample_rate=16000, clip_seconds=clip, num_workers=1,
                 progress=False, shard_size=8)


def _finetune(data_dir, workdir, clip=0.5):
  """Two steps of full fine-tuning from scratch: the whole path a user's layout takes."""
  from audiotl_jax import config as config_lib
  from audiotl_jax.stages import finetune
  config = config_lib.load("configs/finetune.py:strategy=full,model=cnn:tiny,runlocal")
  with config.unlocked():
    config.data.dir = str(data_dir)
    config.data.clip_seconds = clip
    config.batch_size = 8
    config.total_steps = 2
    config.eval_every = 2
    config.frontend.n_mels = 32
    config.frontend.norm_batches = 1
    config.progress = False
  return finetune.run(config, workdir)


def _first_batch(out, target="class", split="train"):
  ds = PreparedDataset(out)
  return next(pipeline.train_iterator(ds, split, batch_size=4, clip_samples=8000, seed=0,
                                      target=target, process_index=0, process_count=1,
                                      prefetch=0))


def test_audioset_name_forms_nesting_and_coverage(tmp_path, capsys):
  root = tmp_path / "as"
  root.mkdir()
  (root / "balanced_train_segments.csv").write_text(
      "YTID,start_seconds,end_seconds,positive_labels\n"  # the plain-header form, no `#` lines
      f'aaaaaaaaaaa,30.000,40.000,"{SPEECH},{MUSIC}"\n'
      f'b_bbbbbbb-b,0.000,10.000,"{MUSIC}"\n'
      f'ccccccccccc,10.000,20.000,"{SPEECH}"\n'
      f'ddddddddddd,0.500,10.500,"{DOG}"\n'
      f'eeeeeeeeeee,20.000,30.000,"{DOG}"\n')
  _official_csv(root / "unbalanced_train_segments.csv", [
      ("uuuuuuuuuuu", 0, 10, [SPEECH]), ("vvvvvvvvvvv", 60, 70, [MUSIC])])
  _official_csv(root / "eval_segments.csv", [("fffffffffff", 30, 40, [MUSIC, SPEECH])])
  bal = root / "audio/balanced_train"
  _wav(bal / "Yaaaaaaaaaaa_30.000_40.000.wav")           # Y + the CSV's decimal seconds
  _wav(bal / "part01/b_bbbbbbb-b_0_10000.flac")          # milliseconds, nested, `_`/`-` in id
  _wav(bal / "part02/deeper/Yddddddddddd_0.500_10.500.ogg")  # fractional start, two levels down
  _wav(bal / "eeeeeeeeeee.wav")                          # the id alone
  (bal / "notes.txt").write_text("not audio")
  _wav(root / "unbalanced_train/uuuuuuuuuuu_0_10.wav")   # integer seconds, split folder at root
  _wav(root / "audio/eval/Yfffffffffff_30.000_40.000.mp3", seconds=0.5, sr=16000)
  listing = readers.audioset(root)
  assert listing.source["splits"].keys() == {"balanced_train", "unbalanced_train", "eval"}
  found = {it.id: it.path.relative_to(root).as_posix() for it in listing.items}
  assert found == {
      "aaaaaaaaaaa_30.000_40.000": "audio/balanced_train/Yaaaaaaaaaaa_30.000_40.000.wav",
      "b_bbbbbbb-b_0.000_10.000": "audio/balanced_train/part01/b_bbbbbbb-b_0_10000.flac",
      "ddddddddddd_0.500_10.500":
          "audio/balanced_train/part02/deeper/Yddddddddddd_0.500_10.500.ogg",
      "eeeeeeeeeee_20.000_30.000": "audio/balanced_train/eeeeeeeeeee.wav",
      "uuuuuuuuuuu_0.000_10.000": "unbalanced_train/uuuuuuuuuuu_0_10.wav",
      "fffffffffff_30.000_40.000": "audio/eval/Yfffffffffff_30.000_40.000.mp3"}
  assert sorted((p["split"], p["id"], p["reason"]) for p in listing.problems) == [
      ("balanced_train", "ccccccccccc_10.000_20.000", "missing file"),
      ("unbalanced_train", "vvvvvvvvvvv_60.000_70.000", "missing file")]
  m = _prepare(listing, tmp_path / "out")
  _check_consistent(listing, tmp_path / "out", m)
  idx = Ontology.load().class_index
  cov = {s: {c["id"]: (c["listed"], c["found"], c["prepared"], c["missing"])
             for c in v["classes"]} for s, v in m["coverage"].items()}
  assert cov["balanced_train"] == {SPEECH: (2, 1, 1, 1), MUSIC: (2, 2, 2, 0), DOG: (2, 2, 2, 0)}
  assert cov["unbalanced_train"] == {SPEECH: (1, 1, 1, 0), MUSIC: (1, 0, 0, 1)}
  assert cov["eval"] == {SPEECH: (1, 1, 1, 0), MUSIC: (1, 1, 1, 0)}
  assert m["splits"]["eval"]["class_counts"][idx[MUSIC]] == 1
  # Not "notes": the mp3's lossy round trip of noise may clip a sample, depending on the noise.
  assert {k: v for k, v in m["counts"].items() if k != "notes"} == {
      "rows": 8, "records": 6, "skipped": 0, "dropped": 2, "kept_with_problems": 0}
  assert m["reasons"]["dropped"] == {"missing file": 2}
  printed = capsys.readouterr().out
  assert "what you have" in printed and "Speech: 1 / 2" in printed and "Music: 0 / 1" in printed
  b = _first_batch(tmp_path / "out", target="multihot", split="balanced_train")
  assert b["label"].shape == (4, 527) and b["label"].sum(1).min() >= 1


def test_speech_commands_12_class_task(tmp_path, finetune=False):
  root = tmp_path / "sc"
  words = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "bed", "cat"]
  val, test = [], []
  for w in words:
    for spk in ("aa", "bb", "cc"):
      _wav(root / w / f"{spk}_nohash_0.wav", seconds=0.1)
    val.append(f"{w}/bb_nohash_0.wav")
    test.append(f"{w}/cc_nohash_0.wav")
  for name in ("white_noise", "running_tap"):
    _wav(root / "_background_noise_" / f"{name}.wav", seconds=12.0, sr=8000)
  (root / "_background_noise_/README.md").write_text("noise")
  (root / "validation_list.txt").write_text("\n".join(val) + "\n")
  (root / "testing_list.txt").write_text("\n".join(test) + "\n")
  listing = readers.speech_commands(root, task="12")
  assert [c["id"] for c in listing.classes][-2:] == ["_silence_", "_unknown_"]
  by = collections.Counter((it.split, it.labels[0]) for it in listing.items)
  for split in ("train", "validation", "test"):
    assert by[(split, "_unknown_")] == 2 and by[(split, "yes")] == 1
    assert by[(split, "_silence_")] == 1  # as many as a command word has on average
  silence = [it for it in listing.items if it.labels == ("_silence_",)]
  for it in silence:  # each split's crops lie in its own stretch of the noise
    lo, hi = {"train": (0, 9.6), "validation": (9.6, 10.8), "test": (10.8, 12.0)}[it.split]
    assert lo <= it.start and it.start + it.duration <= hi + 1e-9 and it.duration == 1.0
  assert readers.speech_commands(root, task="12").items == listing.items  # fixed, seeded
  assert readers.speech_commands(root, task="12", seed=1).items != listing.items
  assert len(readers.speech_commands(root).classes) == 12  # task "35": every word folder
  with pytest.raises(UserError, match="unknown Speech Commands task '7'"):
    readers.speech_commands(root, task="7")
  m = _prepare(listing, tmp_path / "out", clip=1.0)
  _check_consistent(listing, tmp_path / "out", m)
  ds = PreparedDataset(tmp_path / "out")
  assert ds.num_records("train") == 13 and ds.num_classes == 12
  assert _first_batch(tmp_path / "out")["label"].max() < 12
  if finetune:
    results = _finetune(tmp_path / "out", tmp_path / "run", clip=1.0)
    assert results["metric"] == "accuracy" and results["num_test"] == 13


def _scenes_2020(root, duplicate=False):
  meta, train, evaluate = [], [], []
  for scene in ("airport", "park"):
    for loc in range(4):
      for dev in ("a", "b", "s1"):
        name = f"audio/{scene}-lisbon-{loc}-{loc * 10}-{dev}.wav"
        _wav(root / name, seconds=0.1)
        meta.append(f"{name}\t{scene}\t{scene[:2]}-{loc}\t{dev}")
        (evaluate if loc == 3 else train).append(f"{name}\t{scene}")
  if duplicate:
    train.append(train[0])
  (root / "meta.csv").write_text(
      "filename\tscene_label\tidentifier\tsource_label\n" + "\n".join(meta) + "\n")
  setup = root / "evaluation_setup"
  setup.mkdir()
  (setup / "fold1_train.csv").write_text("filename\tscene_label\n" + "\n".join(train) + "\n")
  (setup / "fold1_evaluate.csv").write_text("filename\tscene_label\n" + "\n".join(evaluate) + "\n")
  (setup / "fold1_test.csv").write_text(
      "filename\n" + "\n".join(r.split("\t")[0] for r in evaluate) + "\n")


def test_dcase2020_task1a(tmp_path, finetune=False):
  root = tmp_path / "tau2020"
  _scenes_2020(root, duplicate=True)
  listing = readers.get_reader("dcase2020_task1a")(root)
  assert [(p["reason"], p["row"]) for p in listing.problems] == [("duplicate id", 20)]
  splits = collections.Counter(it.split for it in listing.items)
  assert splits == {"train": 12, "validation": 6, "test": 6}  # one location per scene carved
  location = lambda it: it.id.split("-")[0] + it.id.split("-")[2]  # noqa: E731
  assert not ({location(it) for it in listing.items if it.split == "train"}
              & {location(it) for it in listing.items if it.split == "validation"})
  legacy = readers.dcase2020_task1a(root, validation="test")
  assert "legacy" in legacy.source["note"]
  assert (sorted(it.id for it in legacy.items if it.split == "validation")
          == sorted(it.id for it in legacy.items if it.split == "test"))
  with pytest.raises(UserError, match="'validation' must be one of"):
    readers.dcase2020_task1a(root, validation="evaluate")
  m = _prepare(listing, tmp_path / "out")
  _check_consistent(listing, tmp_path / "out", m)
  assert _first_batch(tmp_path / "out")["audio"].shape == (4, 8000)
  if finetune:
    assert _finetune(tmp_path / "out", tmp_path / "run")["test"]["accuracy"] >= 0


def test_dcase2018_task3_bird_detection(tmp_path):
  root = tmp_path / "bad"
  sets = {"ff1010bird": ("ff1010bird_metadata_2018.csv", "ff1010bird_wav/wav", 10),
          "warblrb10k": ("warblrb10k_public_metadata_2018.csv", "warblrb10k_public_wav/wav", 10),
          "BirdVox-DCASE-20k": ("BirdVoxDCASE20k_csvpublic.csv", "BirdVox-DCASE-20k/wav", 8)}
  for set_id, (csv_name, wav_dir, n) in sets.items():
    rows = ["itemid,datasetid,hasbird"]
    for i in range(n):
      item = f"{i}" if set_id == "ff1010bird" else f"{set_id[:2]}{i:04d}-uuid"
      _wav(root / wav_dir / f"{item}.wav", seconds=0.1)
      rows.append(f"{item},{set_id},{i % 2}")
    (root / csv_name).write_text("\n".join(rows) + "\n")
  with open(root / "warblrb10k_public_metadata_2018.csv", "a") as f:
    f.write("gone-uuid,warblrb10k,1\nwa0000-uuid,warblrb10k,1\nwa0001-uuid,warblrb10k,yes\n")
  listing = readers.get_reader("dcase2018_task3")(root)
  assert listing.task == "binary" and [c["id"] for c in listing.classes] == ["0", "1"]
  assert sorted((p["reason"].split(",")[0], p["row"]) for p in listing.problems) == [
      ("duplicate id", 13), ("hasbird must be 0 or 1", 14), ("missing file", 12)]
  splits = collections.Counter((it.split, it.id.split("/")[0]) for it in listing.items)
  assert splits[("test", "BirdVox-DCASE-20k")] == 8 and splits[("validation", "ff1010bird")] == 2
  assert not any(s == "test" and d != "BirdVox-DCASE-20k" for s, d in splits)
  assert {it.labels[0] for it in listing.items if it.split == "validation"} == {"0", "1"}
  pooled = readers.dcase2018_task3(root, test_set="")
  assert {it.id.split("/")[0] for it in pooled.items if it.split == "test"} == set(sets)
  with pytest.raises(UserError, match="test_set.*'chernobyl'; known: BirdVox"):
    readers.dcase2018_task3(root, test_set="chernobyl")
  m = _prepare(listing, tmp_path / "out")
  _check_consistent(listing, tmp_path / "out", m)
  results = _finetune(tmp_path / "out", tmp_path / "run")
  assert results["metric"] == "auroc" and 0 <= results["test"]["auroc"] <= 1


def test_esc50_folds(tmp_path, finetune=False):
  root = tmp_path / "ESC-50-master"
  rows = ["filename,fold,target,category,esc10,src_file,take"]
  for fold in range(1, 6):
    for target, cat in ((0, "dog"), (1, "rooster"), (41, "chainsaw")):
      for take in "AB":
        name = f"{fold}-{100 + target}{fold}-{take}-{target}.wav"
        _wav(root / "audio" / name, seconds=0.1, sr=44100 // 4)
        rows.append(f"{name},{fold},{target},{cat},{target == 0},{100 + target}{fold},{take}")
  (root / "meta").mkdir()
  (root / "meta/esc50.csv").write_text("\n".join(rows) + "\n")
  listing = readers.get_reader("esc50")(root, fold=3)
  assert [c["id"] for c in listing.classes] == ["dog", "rooster", "chainsaw"]  # target order
  by = collections.Counter(it.split for it in listing.items)
  assert by == {"train": 18, "validation": 6, "test": 6}
  assert {it.id.split("-")[0] for it in listing.items if it.split == "test"} == {"3"}
  src = lambda it: it.id.split("-")[1]  # noqa: E731
  assert not ({src(it) for it in listing.items if it.split == "train"}
              & {src(it) for it in listing.items if it.split == "validation"})
  assert readers.esc50(root, fold=3, esc10=True).classes == [{"id": "dog", "name": "dog"}]
  with pytest.raises(UserError, match="folds: \\[1, 2, 3, 4, 5\\]"):
    readers.esc50(root, fold=6)
  m = _prepare(listing, tmp_path / "out")
  _check_consistent(listing, tmp_path / "out", m)
  assert _first_batch(tmp_path / "out")["label"].max() < 3
  if finetune:
    assert _finetune(tmp_path / "out", tmp_path / "run")["num_test"] == 6


def test_class_folders(tmp_path, finetune=False):
  root = tmp_path / "mine"
  for cls in ("dog", "cat", "cow"):
    for i in range(10):
      _wav(root / cls / ("sub" if i % 3 == 0 else "") / f"{i}.wav", seconds=0.1)
  _wav(root / "stray.wav")
  listing = readers.get_reader("folders")(root)
  assert listing.task == "multiclass"
  assert [c["id"] for c in listing.classes] == ["cat", "cow", "dog"]
  assert [p["reason"] for p in listing.problems] == ["audio outside a class folder"]
  by = collections.Counter((it.split, it.labels[0]) for it in listing.items)
  assert by[("train", "dog")] == 8 and by[("validation", "dog")] == 1 and by[("test", "dog")] == 1
  m = _prepare(listing, tmp_path / "out")
  _check_consistent(listing, tmp_path / "out", m)
  b = _first_batch(tmp_path / "out")
  assert b["audio"].shape == (4, 8000) and set(b["label"].tolist()) <= {0, 1, 2}
  if finetune:
    assert _finetune(tmp_path / "out", tmp_path / "run")["metric"] == "accuracy"
  split_root = tmp_path / "split"
  for split, n in (("train", 6), ("test", 2)):
    for cls in ("yes", "no"):
      for i in range(n):
        _wav(split_root / split / cls / f"{i}.wav", seconds=0.1)
  listing = readers.class_folders(split_root)
  assert listing.task == "binary"
  assert collections.Counter(it.split for it in listing.items) == {
      "train": 10, "validation": 2, "test": 4}
  (split_root / "test").rename(split_root / "eval")
  with pytest.raises(UserError, match="need at least train/ and test/"):
    readers.class_folders(split_root)


def test_prepare_cli_passes_reader_options(tmp_path):
  from audiotl_jax import cli as main
  root = tmp_path / "tau2020"
  _scenes_2020(root)
  assert main.main(["prepare", "--config", "configs/prepare.py:reader=dcase2020_task1a",
                    f"--config.root={root}", "--config.options.validation=test",
                    "--config.clip_seconds=0.1", "--config.num_workers=1",
                    "--config.progress=false", "--workdir", str(tmp_path / "out")]) == 0
  ds = PreparedDataset(tmp_path / "out")
  assert ds.manifest["source"]["validation"] == "test"
  assert ds.num_records("validation") == ds.num_records("test") == 6
  assert list(itertools.islice(ds.ids("validation"), 2)) == list(ds.ids("test")[:2])


@pytest.mark.slow
@pytest.mark.parametrize("layout", [test_speech_commands_12_class_task, test_dcase2020_task1a,
                                    test_esc50_folds, test_class_folders],
                         ids=lambda f: f.__name__[5:])
def test_layout_fine_tunes(tmp_path, layout):
  """The fast tests stop at the pipeline (bird detection fine-tunes there); these go on to two
  fine-tuning steps each."""
  layout(tmp_path, finetune=True)
