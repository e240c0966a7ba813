"""The published studies as configs: each plans the protocol its paper ran (run counts, the
hyper-parameters in every command, the dependency edges), at full scale and at scale=test; the
slow tests run each one end to end on synthetic data in the real layouts."""
import json
import shlex
from pathlib import Path

import pytest

from audiotl_jax import cli as main_lib

REPO = Path(__file__).resolve().parents[1]
STUDIES = ("ontology_scale", "nc_transferability", "petl_ast", "feature_extraction")


def plan(tmp_path, name, arg="", *extra):
  spec = str(REPO / "configs/studies" / f"{name}.py") + (f":{arg}" if arg else "")
  assert main_lib.main(["study", "--config", spec, "--workdir", str(tmp_path / name),
                        "--dry-run", *extra]) == 0
  runs = json.loads((tmp_path / name / "plan.json").read_text())
  return {r["name"]: r for r in runs}


def keys(run) -> dict:
  """`--config.KEY=VALUE` arguments of a run as a dict, and the config spec as `:spec`."""
  out = {":spec": run["args"][run["args"].index("--config") + 1]} if "--config" in run["args"] \
      else {}
  for a in run["args"]:
    if a.startswith("--config."):
      k, _, v = a[len("--config."):].partition("=")
      out[k] = v
  return out


def of_step(runs, step):
  return {n: r for n, r in runs.items() if n.split("/")[0] == step}


def test_ontology_scale_is_the_published_protocol(tmp_path):
  runs = plan(tmp_path, "ontology_scale")
  pre, fine = of_step(runs, "pretrain"), of_step(runs, "finetune")
  assert len(pre) == 14 and len(fine) == 14 * 3 * 3 == 126
  by_label = {n.split("/")[1]: keys(r) for n, r in pre.items()}
  assert by_label["none"]["init_only"] == "true"
  assert by_label["1pct"]["data.fraction"] == "0.01" and by_label["1pct"]["data.seed"] == "42"
  assert by_label["speech"]["data.subset"] == "Speech"
  assert by_label["animal_natural_things"]["data.subset"] == "Animal+Natural sounds+Sounds of things"
  for k in by_label.values():
    assert "model=panns:cnn10_autrainer" in k[":spec"] and k["batch_size"] == "128"
    assert k["num_epochs"] == "30.0" and k["data.train_split"] == "unbalanced_train"
    assert (k["optim.lr"], k["optim.weight_decay"], k["optim.end_lr_factor"]) == (
        "0.001", "0.0", "1.0")  # Adam 1e-3, constant
  tasks = set()
  for name, r in fine.items():
    k = keys(r)
    state = name.split("/")[1].split("-")[0]
    assert f"pretrain/{state}" in r["after"], name  # waits for exactly its own state
    assert not [a for a in r["after"] if a.startswith("pretrain/") and a != f"pretrain/{state}"]
    assert (k["class_balanced"], k["batch_size"], k["num_epochs"]) == ("true", "32", "50.0")
    assert k["seed"] in ("1", "2", "3") and k["seed"] == k["data.seed"]
    task = Path(k["data.dir"]).name
    tasks.add(task)
    assert k["task"] == ("multiclass" if task == "dcase2018_task3" else "")
  assert tasks == {"dcase2020_task1a", "speech_commands", "dcase2018_task3"}
  score = of_step(runs, "score")
  assert len(score) == 3 and all(len([a for a in r["after"] if a.startswith("pretrain/")]) == 14
                                 for r in score.values())
  study = json.loads((tmp_path / "ontology_scale" / "study.json").read_text())
  assert study["published"]["rows"]["full"]["dcase2020_task1a"] == 62.61
  assert study["state_order"][0] == "none"


def test_ontology_scale_legacy_validation_is_a_reader_option(tmp_path):
  runs = plan(tmp_path, "ontology_scale", "legacy_validation=true")
  assert keys(runs["prepare_dcase2020_task1a/dcase2020_task1a"])["options.validation"] == "test"
  assert "options.validation" not in keys(runs["prepare_speech_commands/speech_commands"])
  default = plan(tmp_path / "default", "ontology_scale")
  assert "options.validation" not in keys(default["prepare_dcase2020_task1a/dcase2020_task1a"])


def test_nc_transferability_sources_frames_and_targets(tmp_path):
  runs = plan(tmp_path, "nc_transferability")
  src = {n.split("/")[1]: keys(r) for n, r in of_step(runs, "source").items()}
  assert set(src) == {"dcase_cnn-scenes", "cnn-speech", "crnn-speech", "cnn-music", "crnn-music"}
  # 40 ms frames for scenes and music, 30 ms for speech, 50 % overlap, at 16 kHz
  assert (src["cnn-speech"]["frontend.n_fft"], src["cnn-speech"]["frontend.hop_length"]) == (
      "480", "240")
  assert (src["crnn-music"]["frontend.n_fft"], src["crnn-music"]["frontend.hop_length"]) == (
      "640", "320")
  assert src["dcase_cnn-scenes"]["model.name"] == "dcase_cnn:base"
  fine = of_step(runs, "finetune")
  assert len(fine) == 5 * 2 * 3
  assert {keys(r)[":spec"].rsplit("strategy=", 1)[-1] for r in fine.values()} == {"linear",
                                                                                   "full"}
  score = runs["score/cough"]
  assert sorted(a for a in score["after"] if a.startswith("source/")) == sorted(
      f"source/{s}" for s in src)


def test_petl_ast_every_strategy_on_five_folds_and_a_few_shot_arm(tmp_path):
  runs = plan(tmp_path, "petl_ast")
  esc, speech, few = (of_step(runs, s) for s in ("esc50", "speech", "few_shot"))
  assert len(esc) == 10 * 5 and len(speech) == 10 * 3 and len(few) == 4 * 3 * 3
  folds = {Path(keys(r)["data.dir"]).name for r in esc.values()}
  assert folds == {f"esc50_fold{k}" for k in range(1, 6)}
  assert {keys(r)["options.fold"] for r in of_step(runs, "prepare_esc50").values()} == {
      "1", "2", "3", "4", "5"}
  assert all("import_esc50/ast_base" in " ".join(r["after"]) or "import_esc50/import_esc50"
             in r["after"] for r in esc.values())
  imports = [r for n, r in runs.items() if n.startswith("import_")]
  assert sorted(r["args"][r["args"].index("--frames") + 1] for r in imports) == ["128", "512"]


def test_feature_extraction_probes_read_one_embedding_pass(tmp_path):
  runs = plan(tmp_path, "feature_extraction")
  for backbone, hybrid in (("vggish", "block3+block4+embedding"),
                           ("cnn14", "block5+block6+embedding")):
    probes = of_step(runs, f"probe_{backbone}")
    assert len(probes) == 2 * 2 * 3
    assert {keys(r)["layers"] for r in probes.values()} == {"embedding", hybrid}
    embed = of_step(runs, f"embed_{backbone}")
    (embed_name, embed_run), = embed.items()
    assert all(embed_name in r["after"] and keys(r)["embeddings_dir"] == embed_run["workdir"]
               for r in probes.values())
    fine = of_step(runs, f"finetune_{backbone}")
    assert {keys(r)[":spec"].rsplit("strategy=", 1)[-1] for r in fine.values()} == {
        "linear", "mlp", "partial:2", "full"}


@pytest.mark.parametrize("name", STUDIES)
def test_every_study_plans_at_test_scale(tmp_path, name):
  runs = plan(tmp_path, name, "scale=test")
  data = runs["data/data"]
  assert data["stage"] == "synthetic" and "test" in data["args"]
  assert all(r["stage"] != "import" for r in runs.values())  # no released weights at test scale
  for r in runs.values():
    shlex.join(r["args"])  # every command can be written out


@pytest.mark.slow
@pytest.mark.parametrize("name, arg", [
    ("nc_transferability", "scale=test,seeds=0"),
    ("feature_extraction", "scale=test,seeds=0"),
    ("petl_ast", "scale=test,seeds=0,strategies=linear+lora,few_shot=1,"
                 "few_shot_strategies=linear"),
    ("ontology_scale", "scale=test,seeds=1"),
])
def test_study_runs_end_to_end_at_test_scale(tmp_path, name, arg):
  spec = str(REPO / "configs/studies" / f"{name}.py") + f":{arg}"
  workdir = tmp_path / name
  code = main_lib.main(["study", "--config", spec, "--workdir", str(workdir)])
  state = json.loads((workdir / "study_state.json").read_text())
  failed = {k: v for k, v in state.get("runs", state).items()
            if isinstance(v, dict) and v.get("status") in ("failed", "blocked")}
  assert code == 0 and not failed, failed
  report = (workdir / "report.md").read_text()
  assert "## Downstream" in report and (workdir / "results.parquet").exists()


def test_real_data_roots_are_data_arguments(tmp_path):
  runs = plan(tmp_path, "nc_transferability", "data.gtzan=/corpora/GTZAN,data.cough=/c/x.csv")
  assert keys(runs["prepare_gtzan/gtzan"])["root"] == "/corpora/GTZAN"
  assert keys(runs["prepare_cough/cough"])["root"] == "/c/x.csv"
  with pytest.raises(Exception, match="'data.gtzn' is not known; known: .*data.gtzan"):
    plan(tmp_path, "nc_transferability", "data.gtzn=/x")
