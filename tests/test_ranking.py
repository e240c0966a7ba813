"""The ranking harness: statistics, bootstrap intervals, variants, matching and outputs."""
import json

import numpy as np
import pytest
from scipy import stats

from audiotl_jax.analysis import ranking
from audiotl_jax.errors import UserError


def test_rank_metrics_on_known_orders():
  results = [0.5, 0.6, 0.7, 0.9]
  perfect = ranking.rank_metrics([1, 2, 3, 4], results)
  assert perfect["spearman"] == pytest.approx(1) and perfect["kendall"] == pytest.approx(1)
  assert perfect["weighted_tau"] == pytest.approx(1)
  assert perfect["top1_hit"] == 1 and perfect["regret"] == 0
  assert perfect["pearson"] == pytest.approx(stats.pearsonr([1, 2, 3, 4], results)[0])
  # The score picks the third-best state: a miss with regret 0.9 - 0.6.
  swapped = ranking.rank_metrics([1, 4, 3, 2], results)
  assert swapped["top1_hit"] == 0 and swapped["regret"] == pytest.approx(0.3)
  assert swapped["kendall"] == pytest.approx(stats.kendalltau([1, 4, 3, 2], results)[0])
  # Weighted tau counts a swap at the top more than one at the bottom.
  top = ranking.rank_metrics([1, 2, 4, 3], results)["weighted_tau"]
  bottom = ranking.rank_metrics([2, 1, 3, 4], results)["weighted_tau"]
  assert top < bottom
  assert np.isnan(ranking.rank_metrics([1, 1, 1], [0.1, 0.2, 0.3])["pearson"])


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_signal():
  rng = np.random.default_rng(0)
  acc = rng.random(12)
  good = ranking.bootstrap(acc + 0.05 * rng.standard_normal(12), acc, num_resamples=100)
  noise = ranking.bootstrap(rng.random(12), acc, num_resamples=100)
  assert 0.7 < good["spearman"][0] <= good["spearman"][1] <= 1
  assert noise["spearman"][1] - noise["spearman"][0] > good["spearman"][1] - good["spearman"][0]
  assert 0 <= good["regret"][0] <= good["regret"][1]


def test_size_aware_breaks_ties_towards_larger_models():
  out = ranking.size_aware([1.0, 1.0, 0.0], [1e6, 1e7, 1e8], weight=0.5)
  assert out[1] > out[0]
  assert np.allclose(ranking.size_aware([1.0, 2.0], [5, 5]), [-1, 1])  # equal sizes: z(score)


def _study(tmp_path):
  """Four pre-trained states, two strategies; nc_score (lower better) ranks them perfectly."""
  acc = {"a": 0.9, "b": 0.7, "c": 0.6, "d": 0.4}
  rows = []
  for i, (name, a) in enumerate(acc.items()):
    ckpt = tmp_path / "pretrain" / name
    (ckpt / "checkpoints" / "4").mkdir(parents=True)
    rows.append({"source": name, "checkpoint": str(ckpt), "layer": "embedding",
                 "num_params": 1000 * (i + 1), "nc_score": 1 - a, "logme": float(i)})
    for strategy, shift in (("linear", 0.0), ("full", 0.05)):
      run = tmp_path / "finetune" / f"{name}-{strategy}"
      run.mkdir(parents=True)
      init = ckpt / "checkpoints" / "4" if strategy == "full" else ckpt  # step folder matches
      (run / "results.json").write_text(json.dumps({
          "stage": "finetune", "strategy": strategy, "init": str(init), "metric": "accuracy",
          "test": {"accuracy": a + shift}, "num_params": 1000}))
  scores = {"scores": {"nc_score": {"higher_is_better": False},
                       "logme": {"higher_is_better": True}}, "rows": rows}
  (tmp_path / "scores.json").write_text(json.dumps(scores))
  return scores


def test_harness_end_to_end(tmp_path):
  _study(tmp_path)
  md = ranking.run(scores_path=tmp_path, finetune=[str(tmp_path / "finetune" / "*")],
                   out_dir=tmp_path / "out", num_resamples=20)
  records = json.loads((tmp_path / "out" / "ranking.json").read_text())
  assert (tmp_path / "out" / "ranking.png").stat().st_size > 0
  by = {(r["strategy"], r["score"]): r for r in records}
  assert set(by) == {(s, n) for s in ("full", "linear")
                     for n in ("nc_score", "nc_score+size", "logme", "logme+size")}
  nc = by[("full", "nc_score")]
  assert nc["num_states"] == 4 and nc["spearman"] == pytest.approx(1)
  assert nc["top1_hit"] == 1 and nc["regret"] == 0
  logme = by[("linear", "logme")]  # increases with i while accuracy falls: perfectly wrong
  assert logme["spearman"] == pytest.approx(-1) and logme["regret"] == pytest.approx(0.5)
  assert "| full | embedding | nc_score | 4 | 1.000" in md.read_text()


def test_harness_refusals(tmp_path):
  with pytest.raises(UserError, match="no fine-tuning results.json"):
    ranking.load_finetune([str(tmp_path / "nothing" / "*")])
  scores = _study(tmp_path)
  for row in scores["rows"]:
    row["checkpoint"], row["source"] = "/elsewhere/x", "x"
  with pytest.raises(UserError, match="no score row matches"):
    ranking.evaluate(scores, ranking.load_finetune([str(tmp_path / "finetune" / "*")]))
