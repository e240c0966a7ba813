"""Statistics over seeds, the tidy results table, the report's sections and honest plots, on
fabricated study folders (3 states x 2 tasks x 2 strategies x 3 seeds) with known values."""
import json
import math

from matplotlib.container import ErrorbarContainer
import numpy as np
import pandas as pd
import pytest
from scipy import stats as sp

from audiotl_jax.analysis import plots, report, results, stats

SEEDS = (1, 2, 3)
# (task, state, strategy) -> test accuracy of seeds 1, 2, 3.
ACC = {
    # big beats small on every seed by 0.10 ± 0.01: significant.
    ("cmds", "big", "full"): (0.80, 0.85, 0.90), ("cmds", "small", "full"): (0.70, 0.76, 0.79),
    ("cmds", "scratch", "full"): (0.60, 0.62, 0.64),
    # The means differ (0.65 vs 0.64) but the per-seed differences -0.02, +0.06, -0.01 do not
    # say which is better.
    ("cmds", "big", "linear"): (0.60, 0.70, 0.65), ("cmds", "small", "linear"): (0.62, 0.64, 0.66),
    ("cmds", "scratch", "linear"): (0.40, 0.42, 0.44),
    # On scenes big is worse than small on every seed: "no".
    ("scenes", "big", "full"): (0.50, 0.52, 0.55), ("scenes", "small", "full"): (0.60, 0.61, 0.66),
    ("scenes", "scratch", "full"): (0.40, 0.45, 0.41),
    ("scenes", "big", "linear"): (0.45, 0.47, 0.49),
    ("scenes", "small", "linear"): (0.44, 0.50, 0.47),
    ("scenes", "scratch", "linear"): (0.30, 0.31, 0.35),
}
PRE = {"big": (1.0, 1000, 0.5), "small": (0.1, 100, 0.3)}  # fraction, clips, val mAP


def _write(folder, results_json, config=None):
  folder.mkdir(parents=True)
  (folder / "results.json").write_text(json.dumps(results_json))
  if config is not None:
    (folder / "config.json").write_text(json.dumps(config))


def _study(root, *, seeds=SEEDS, meta=None):
  """A study folder in the layout of `audiotl study`, with run names that say nothing (the
  report must identify runs from their files)."""
  for state, (fraction, clips, mAP) in PRE.items():
    _write(root / "pretrain" / state, {
        "stage": "pretrain", "subset": "Music", "fraction": fraction, "seed": 0,
        "num_classes": 5, "num_train_clips": clips, "num_params": 1000,
        "val": {"mAP": mAP}, "test": {"mAP": mAP - 0.05}, "seconds": 3.0},
        {"seed": 0, "data": {"dir": "/data/prepare_audioset/audioset"}})
  _write(root / "pretrain" / "scratch", {"stage": "init", "subset": "none (random init)",
                                         "num_classes": 5, "num_params": 1000})
  # A prepared manifest for cmds: 4 classes, chance 0.25 (scenes has none reachable).
  (root / "prep" / "cmds").mkdir(parents=True)
  (root / "prep" / "cmds" / "manifest.json").write_text(json.dumps({"classes": [1, 2, 3, 4]}))
  i = 0
  for (task, state, strategy), values in ACC.items():
    for seed, value in zip(SEEDS, values):
      if seed not in seeds:
        continue
      init = root / "pretrain" / state
      if state == "big" and strategy == "full":
        init = init / "checkpoints" / "7"  # a step folder names its run folder's state
      data_dir = root / "prep" / "cmds" if task == "cmds" else f"/elsewhere/prepare_{task}/{task}"
      _write(root / "finetune" / f"run{i:02d}", {
          "stage": "finetune", "task": "multiclass", "metric": "accuracy", "strategy": strategy,
          "init": str(init), "test": {"accuracy": value}, "val": {"accuracy": value - 0.01},
          "seconds": 1.5, "num_trainable": 10 if strategy == "linear" else 1000,
          "num_params": 1000, "num_test": 50},
          {"seed": seed, "strategy": strategy, "data": {"dir": str(data_dir), "few_shot": 0},
           "optim": {"lr": 1e-3}})
      i += 1
  if meta is not None:
    (root / "study.json").write_text(json.dumps(meta))
  return root


def _ci(values):
  v = np.asarray(values, float)
  half = sp.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
  return v.mean() - half, v.mean() + half


# ------------------------------------------------------------------ statistics


def test_describe_gives_the_t_interval():
  s = stats.describe([0.80, 0.85, 0.90])
  # By hand: std 0.05, t(0.975, 2) = 4.302653, half-width 4.302653 * 0.05 / sqrt(3) = 0.124207.
  assert s["mean"] == pytest.approx(0.85) and s["std"] == pytest.approx(0.05) and s["n"] == 3
  assert s["ci"] == pytest.approx((0.85 - 0.124207, 0.85 + 0.124207), abs=1e-6)
  assert s["ci"] == pytest.approx(_ci([0.80, 0.85, 0.90]))
  one = stats.describe([0.7, float("nan")])  # NaN left out: one value, no interval
  assert one["n"] == 1 and math.isnan(one["ci"][0]) and stats.fmt_summary(one) == "0.700 (n=1)"
  assert stats.describe([]) is None and stats.fmt_summary(None) == "n/a"
  assert stats.fmt_summary(s) == "0.850 ± 0.050 [0.726, 0.974] (n=3)"


def test_paired_comparison_by_seed():
  a = dict(zip(SEEDS, ACC[("cmds", "big", "full")]))
  b = dict(zip(SEEDS, ACC[("cmds", "small", "full")]))
  b[9] = 0.1  # a seed only B ran is not paired
  out = stats.paired(a, b)
  d = np.array([0.10, 0.09, 0.11])
  t = d.mean() / (d.std(ddof=1) / math.sqrt(3))
  assert out["n"] == 3 and out["diff"] == pytest.approx(0.10)
  assert out["p"] == pytest.approx(2 * sp.t.sf(t, 2)) and out["p"] < 0.05
  assert out["ci"] == pytest.approx(_ci(d))
  assert out["verdict"] == "yes"
  assert stats.paired(b, a)["verdict"] == "no"
  # Means differ, the differences do not agree: not significant.
  lin = stats.paired(dict(zip(SEEDS, ACC[("cmds", "big", "linear")])),
                     dict(zip(SEEDS, ACC[("cmds", "small", "linear")])))
  assert lin["diff"] == pytest.approx(0.01) and lin["p"] > 0.5
  assert lin["ci"][0] < 0 < lin["ci"][1] and lin["verdict"] == "not significant"
  # The same margin on every seed: infinitely significant, without scipy's precision warning.
  same = stats.paired({1: 0.8, 2: 0.7, 3: 0.9}, {1: 0.7, 2: 0.6, 3: 0.8})
  assert same["p"] == 0 and same["verdict"] == "yes"
  single = stats.paired({1: 0.8}, {1: 0.6})
  assert single["verdict"] == "single seed: no test" and math.isnan(single["p"])
  assert single["diff"] == pytest.approx(0.2) and math.isnan(single["ci"][0])


# ------------------------------------------------------------------ the tidy table


def test_results_table_has_one_row_per_run_and_reads_back(tmp_path):
  study = _study(tmp_path)
  df = results.table(study)
  assert len(df) == len(ACC) * len(SEEDS) + 3
  for column in ("step", "run", "stage", "state", "task", "strategy", "seed", "test_accuracy",
                 "val_accuracy", "test_mAP", "seconds", "num_trainable", "num_params",
                 "config.seed", "config.data.dir", "config.optim.lr"):
    assert column in df, column
  fine = results.finetune(df)
  assert set(fine["state"]) == {"big", "small", "scratch"}  # from init, not the run name
  assert set(fine["task"]) == {"cmds", "scenes"} and set(fine["seed"]) == set(SEEDS)
  got = fine.set_index(["task", "state", "strategy", "seed"])["test_accuracy"]
  assert got[("scenes", "small", "linear", 2)] == 0.50
  assert set(df.loc[df["stage"] == "pretrain", "task"]) == {"audioset"}
  parquet, csv = results.write_tables(study, df)
  back = pd.read_parquet(parquet)
  assert list(back.columns) == list(df.columns) and back.equals(df)
  back_csv = pd.read_csv(csv)
  assert len(back_csv) == len(df)
  assert np.allclose(back_csv["test_accuracy"].fillna(-1), df["test_accuracy"].fillna(-1))


def test_state_and_task_identification():
  assert results.state_of("") == results.SCRATCH
  assert results.state_of("/w/pretrain/music/checkpoints/12") == "music"
  assert results.state_of("/w/pretrain/music/checkpoints/") == "music"
  assert results.task_of({"data": {"dir": "/w/prepare_esc50/esc50_fold3"}}) == ("esc50", 3)
  assert results.task_of({"data": {"dir": "/w/sc", "few_shot": 8}}) == ("sc@8-shot", None)
  assert results.task_of(None) == (None, None)


# ------------------------------------------------------------------ the report


def test_report_tables_questions_and_published(tmp_path):
  meta = {"comparisons": [["bigger pre-training", "big", "small"],
                          ["pre-training vs none", "big", "scratch"],
                          ["never ran", "big", "nowhere"]],
          "state_order": ["small", "big", "scratch"],
          "notes": ["Published numbers are means of 3 seeds."],
          "published": {"metric": "accuracy", "unit": "%", "tasks": ["cmds", "scenes"],
                        "rows": {"big": {"cmds": 84.0, "scenes": 50.0},
                                 "scratch": {"cmds": 60.0}}}}
  study = _study(tmp_path, meta=meta)
  text = report.write(study, num_resamples=20).read_text()
  assert "Single seed" not in text
  assert "## About the data" in text and "- Published numbers are means of 3 seeds." in text
  # The downstream table per task: mean ± std [95 % CI] (n), states in study.json's order.
  lo, hi = _ci(ACC[("cmds", "big", "full")])
  assert f"| big | 0.850 ± 0.050 [{lo:.3f}, {hi:.3f}] (n=3) |" in text
  cmds = text[text.index("### Task `cmds`"):]
  assert cmds.index("| small |") < cmds.index("| big |") < cmds.index("| scratch |")
  # The questions, answered by the paired test per task and strategy.
  rows = {(line.split(" | ")[1], line.split(" | ")[2], line.split(" | ")[0][2:]):
          line for line in text.splitlines() if line.startswith(("| bigger", "| pre-training"))}
  assert rows[("cmds", "full", "bigger pre-training")].endswith("| 3 | **yes** |")
  assert rows[("cmds", "linear", "bigger pre-training")].endswith("| **not significant** |")
  assert rows[("scenes", "full", "bigger pre-training")].endswith("| **no** |")
  assert "| +0.100 [" in rows[("cmds", "full", "bigger pre-training")]
  assert "Not answered (a state did not run): never ran." in text
  # Published beside ours, in %, with the difference.
  assert "## Published results beside ours" in text
  assert "| big | cmds | 84.00 | 85.00 (n=3) | +1.00 | 65.00 (n=3) | -19.00 |" in text
  assert "| scratch | cmds | 60.00 | 62.00 (n=3) | +2.00 |" in text
  # The subsets at two fractions make a scaling curve; the tables are beside the report.
  assert "## Scaling with pre-training data" in text and (study / "scaling.png").exists()
  assert (study / "results.parquet").exists() and (study / "results.csv").exists()
  summary = json.loads((study / "report.json").read_text())
  assert summary["max_seeds"] == 3 and not summary["single_seed"]
  verdicts = {(c["task"], c["strategy"], c["question"]): c["verdict"]
              for c in summary["comparisons"]}
  assert verdicts[("cmds", "full", "pre-training vs none")] == "yes"


def test_single_seed_study_says_so(tmp_path):
  study = _study(tmp_path, seeds=(1,))  # no study.json at all
  text = report.write(study).read_text()
  assert text.splitlines()[2].startswith("**Single seed")
  assert "| big | 0.800 (n=1) |" in text and "## The questions" not in text
  meta = {"comparisons": [["q", "big", "small"]]}
  (study / "study.json").write_text(json.dumps(meta))
  text = report.write(study).read_text()
  assert text.splitlines()[2].startswith("**Single seed") and "**single seed: no test**" in text


def _scores(study, task, states_scores, *, via_config):
  """A scores.json for `task` under score/<task>/, which names its task by a config.json or by
  its embeddings' dataset."""
  folder = study / "score" / task
  folder.mkdir(parents=True)
  rows = [{"source": s, "checkpoint": str(study / "pretrain" / s), "layer": "embedding",
           "num_params": 1000, "nc_score": -v, "logme": v} for s, v in states_scores.items()]
  (folder / "scores.json").write_text(json.dumps({
      "scores": {"nc_score": {"higher_is_better": False}, "logme": {"higher_is_better": True}},
      "rows": rows}))
  data = f"/data/prepare_{task}/{task}"
  if via_config:
    (folder / "config.json").write_text(json.dumps({"data": {"dir": data}}))
  else:
    (folder / "embeddings" / "big").mkdir(parents=True)
    (folder / "embeddings" / "big" / "embed_config.json").write_text(json.dumps({"dataset": data}))


def test_scores_and_ranking_per_task_and_over_tasks(tmp_path):
  study = _study(tmp_path)
  _scores(study, "cmds", {"big": 3.0, "small": 2.0, "scratch": 1.0}, via_config=True)
  _scores(study, "scenes", {"big": 2.0, "small": 3.0, "scratch": 1.0}, via_config=False)
  text = report.write(study, num_resamples=30).read_text()
  scores = text[text.index("## Transferability scores"):text.index("## Ranking harness")]
  assert "### Task `cmds`" in scores and "### Task `scenes`" in scores
  # logme orders both tasks' states exactly as their mean full fine-tuning result: Kendall 1.
  assert "| logme | full | 3 |" in scores and scores.count("| logme | full | 3 |") == 2
  records = json.loads((study / "ranking" / "ranking.json").read_text())
  per = {(r["task"], r["strategy"], r["score"]): r for r in records}
  assert per[("cmds", "full", "logme")]["spearman"] == pytest.approx(1)
  both = per[("all tasks", "full", "nc_score")]
  assert both["num_tasks"] == 2 and both["spearman"] == pytest.approx(
      np.mean([per[(t, "full", "nc_score")]["spearman"] for t in ("cmds", "scenes")]))
  assert both["ci"]["spearman"][0] <= both["spearman"] <= both["ci"]["spearman"][1] + 1e-9
  assert "Over all tasks" in text and (study / "scores.png").exists()


# ------------------------------------------------------------------ the plots


def _cells(tmp_path, seeds=SEEDS):
  df = results.table(_study(tmp_path, seeds=seeds))
  tasks = ["cmds", "scenes"]
  return results.cells(df), tasks, {t: results.facts(df, t) for t in tasks}


def test_downstream_plot_draws_intervals_from_a_sensible_floor(tmp_path):
  cells, tasks, facts = _cells(tmp_path)
  states, strategies = ["big", "small", "scratch"], ["full", "linear"]
  fig = plots.plot_downstream(
      tmp_path / "d.png", cells, tasks, states, strategies,
      metrics={t: "accuracy" for t in tasks}, clips={t: facts[t]["clip"] for t in tasks},
      chance={t: facts[t]["chance"] for t in tasks})
  assert facts["cmds"]["chance"] == 0.25 and facts["cmds"]["clip"] == pytest.approx(0.02)
  axes = [ax for ax in fig.axes if ax.axison]
  assert len(axes) == 2
  assert fig.get_size_inches()[0] * plots.DPI <= 1600
  cmds, scenes = axes
  assert cmds.get_ylim()[0] == pytest.approx(0.25)  # chance, below every interval
  assert 0 < scenes.get_ylim()[0] < 0.30  # no chance known: a little below the lowest value
  for ax in axes:
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == len(strategies)
    for c in bars:
      assert len(c.lines[0].get_xdata()) == len(states)
      segments = c.lines[2][0].get_segments()
      assert len(segments) == len(states) and all(np.isfinite(s).all() for s in segments)
    # The axis spans at least ten test clips: one clip never fills the plot.
    assert ax.get_ylim()[1] - ax.get_ylim()[0] >= 10 * 0.02
    assert "1 test clip = 0.020" in ax.get_title()
  assert "95 % t-interval" in fig._suptitle.get_text()  # pylint: disable=protected-access


def test_single_seed_plot_has_no_bars_and_says_so(tmp_path):
  cells, tasks, facts = _cells(tmp_path, seeds=(1,))
  fig = plots.plot_downstream(tmp_path / "d.png", cells, tasks, ["big", "small", "scratch"],
                              ["full", "linear"], metrics={t: "accuracy" for t in tasks},
                              clips={t: 0.02 for t in tasks}, chance={t: None for t in tasks})
  assert "single seed" in fig._suptitle.get_text()  # pylint: disable=protected-access
  for ax in (ax for ax in fig.axes if ax.axison):
    for c in (c for c in ax.containers if isinstance(c, ErrorbarContainer)):
      # NaN half-widths: matplotlib draws no segment at all.
      assert all(s.size == 0 or not np.isfinite(s).all() for s in c.lines[2][0].get_segments())


def test_score_plot_grid_and_sign_corrected_axis(tmp_path):
  cells, tasks, facts = _cells(tmp_path)
  panels = []
  for task in tasks + ["cmds", "scenes"]:  # four panels: two rows of at most three
    for name, sign in (("nc_score", -1),):
      xs = {"big": -3.0, "small": -2.0, "scratch": -1.0}
      panels.append({"task": task, "score": name, "sign": sign, "metric": "accuracy",
                     "clip": 0.02, "chance": facts[task]["chance"],
                     "points": {"full": [(s, sign * xs[s], cells[(task, s, "full")])
                                         for s in xs]},
                     "corr": {"full": {"pearson": 0.9, "kendall": 1.0}}})
  fig = plots.plot_scores(tmp_path / "s.png", panels, ["big", "small", "scratch"],
                          ["full", "linear"])
  axes = [ax for ax in fig.axes if ax.axison]
  assert len(axes) == 4 and len({round(ax.get_position().x0, 3) for ax in axes}) <= 3
  assert axes[0].get_xlabel().startswith("\u2212nc_score (sign-corrected: higher = predicts")
  assert all(ax.get_ylim()[0] > 0 for ax in axes)
  assert len(fig.legends) == 1  # one legend table beside the grid: states by marker
  labels = [t.get_text() for t in fig.legends[0].get_texts()]
  assert {"big", "small", "scratch"} <= set(labels)


def test_axis_range_floor():
  # Two results one clip apart: the axis still spans ten clips and starts above zero.
  bottom, top = plots.axis_range([0.80, 0.82], [0.80, 0.82], clip=0.02)
  assert top - bottom >= 0.2 and bottom > 0
  assert plots.axis_range([0.6], [0.7], chance=0.5)[0] == 0.5
  assert plots.axis_range([0.01], [0.30])[0] == 0.0  # never below zero


def test_score_guided_selection_in_hindsight_regret_and_compute(tmp_path):
  """logme ranks cmds as full fine-tuning does (big first): regret 0; on scenes it picks big
  where small is best: regret = mean(small) - mean(big). Each state's runs took 3 x 1.5 s."""
  study = _study(tmp_path)
  _scores(study, "cmds", {"big": 3.0, "small": 2.0, "scratch": 1.0}, via_config=True)
  _scores(study, "scenes", {"big": 3.0, "small": 2.0, "scratch": 1.0}, via_config=True)
  text = report.write(study, num_resamples=30).read_text()
  part = text[text.index("## Score-guided selection, in hindsight"):]
  assert "| cmds | full | logme | big | 0.000 | 9 s of 14 s (67 %) |" in part
  assert "| cmds | full | nc_score | big | 0.000 |" in part  # lower-is-better, negated here
  regret = np.mean(ACC[("scenes", "small", "full")]) - np.mean(ACC[("scenes", "big", "full")])
  assert f"| scenes | full | logme | big | {regret:.3f} |" in part


def test_detection_task_scores_are_also_set_against_accuracy(tmp_path):
  """A binary task's main metric is AUROC; the scores are correlated with accuracy too. Here the
  score orders the states as accuracy does and opposite to AUROC."""
  study = tmp_path / "s"
  auroc = {"a": 0.9, "b": 0.8, "c": 0.7}
  acc = {"a": 0.6, "b": 0.7, "c": 0.8}
  i = 0
  for state in auroc:
    _write(study / "pretrain" / state, {"stage": "pretrain", "subset": "Music", "fraction": 1.0,
                                        "num_classes": 5, "val": {"mAP": 0.5}})
    for seed in (1, 2):
      _write(study / "finetune" / f"r{i}", {
          "stage": "finetune", "task": "binary", "metric": "auroc", "strategy": "full",
          "init": str(study / "pretrain" / state), "num_test": 20,
          "test": {"auroc": auroc[state] + seed / 100, "accuracy": acc[state] + seed / 100}},
          {"seed": seed, "data": {"dir": "/d/prepare_cough/cough"}})
      i += 1
  _scores(study, "cough", {"a": 1.0, "b": 2.0, "c": 3.0}, via_config=True)
  text = report.write(study, num_resamples=20).read_text()
  part = text[text.index("Against test accuracy"):]
  assert "| logme | full | 3 | 1.000 | 1.000 |" in part
  main = text[text.index("### Task `cough`"):text.index("Against test accuracy")]
  assert "| logme | full | 3 | -1.000 | -1.000 |" in main
