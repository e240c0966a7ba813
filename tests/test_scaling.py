"""Scaling curves in the report: states grouped by (subset, fraction), seeds averaged."""
import json

import numpy as np
import pytest
from scipy import stats

from audiotl_jax.analysis import report
from audiotl_jax.analysis import results
from audiotl_jax.analysis import scaling


def _pre(subset, fraction, seed, clips, mAP):
  return {"stage": "pretrain", "model": "cnn:tiny", "subset": subset, "fraction": fraction,
          "seed": seed, "num_classes": 3, "num_train_clips": clips, "val": {"mAP": mAP},
          "test": {"mAP": mAP}}


def _fine(strategy, acc):
  return {"stage": "finetune", "metric": "accuracy", "strategy": strategy,
          "test": {"accuracy": acc}, "val": {"accuracy": acc}}


def _study(tmp_path):
  """Music at 0.1 and 1.0 with two seeds each, Animal at 1.0 only (no curve), linear + full."""
  acc = {("Music", 0.1, 0): 0.50, ("Music", 0.1, 1): 0.54, ("Music", 1.0, 0): 0.70,
         ("Music", 1.0, 1): 0.74, ("Animal", 1.0, 0): 0.60}
  for (subset, fraction, seed), a in acc.items():
    state = f"{subset}-{fraction}-s{seed}"
    clips = int(1000 * fraction)
    for kind, name, r in (("pretrain", state, _pre(subset, fraction, seed, clips, a / 2)),
                          ("finetune", f"{state}-linear", _fine("linear", a)),
                          ("finetune", f"{state}-full", _fine("full", a + 0.1))):
      d = tmp_path / kind / name
      d.mkdir(parents=True)
      (d / "results.json").write_text(json.dumps(r))
  return tmp_path


def test_points_average_seeds_and_skip_single_fraction_subsets(tmp_path):
  pts = scaling.points(results.table(_study(tmp_path)), results.UNNAMED)
  assert list(pts) == ["Music"]  # Animal has one fraction: no curve
  low, high = pts["Music"][0.1], pts["Music"][1.0]
  assert low["clips"] == 100 and high["clips"] == 1000
  assert low["linear"]["mean"] == pytest.approx(0.52) and low["linear"]["n"] == 2
  assert low["linear"]["std"] == pytest.approx(np.std([0.50, 0.54], ddof=1))
  assert high["full"]["mean"] == pytest.approx(0.82)
  assert high["pretrain_mAP"]["mean"] == pytest.approx(0.36)
  # +0.20 accuracy from 100 to 1,000 clips: a slope of 0.20 per decade, fitted over the four
  # runs at log10 clips 2, 2, 3, 3 (Sxx = 1), residuals ±0.02: stderr = sqrt(4 * 0.02**2 / 2),
  # on two degrees of freedom.
  fit = scaling.fits(pts, "linear")["Music"]
  assert fit["slope"] == pytest.approx(0.20) and fit["n"] == 4
  half = stats.t.ppf(0.975, 2) * np.sqrt(4 * 0.02**2 / 2)
  assert fit["ci"] == pytest.approx((0.20 - half, 0.20 + half))


def test_report_has_the_scaling_section_and_plot(tmp_path):
  study = _study(tmp_path)
  text = report.write(study).read_text()
  assert "## Scaling with pre-training data" in text
  # Two seeds: the 95 % t-interval is mean ± t(0.975, 1) * std / sqrt(2) = mean ± 8.985 * std.
  assert "| Music | 0.1 | 100 | 0.260 ± 0.014 [0.133, 0.387] (n=2) | " \
      "0.620 ± 0.028 [0.366, 0.874] (n=2) | 0.520 ± 0.028 [0.266, 0.774] (n=2) |" in text
  assert "- linear: Music +0.200 [+0.078, +0.322]" in text
  assert (study / "scaling.png").stat().st_size > 10_000


def test_nan_metrics_are_left_out_not_averaged_in(tmp_path):
  study = _study(tmp_path)
  path = study / "pretrain/Music-0.1-s1/results.json"
  r = json.loads(path.read_text())
  r["val"]["mAP"] = float("nan")  # a held-out split without a positive clip
  path.write_text(json.dumps(r))
  low = scaling.points(results.table(study), results.UNNAMED)["Music"][0.1]
  mAP = low["pretrain_mAP"]
  assert (mAP["mean"], mAP["std"], mAP["n"], mAP["values"]) == (pytest.approx(0.25), 0.0, 1, [0.25])
  assert np.isnan(mAP["ci"][0])  # one value: no interval


def test_no_section_without_a_second_fraction(tmp_path):
  df = results.table(_study(tmp_path))
  df = df[~df["run"].str.startswith("Music-0.1")]
  assert scaling.section(tmp_path, df, [results.UNNAMED], ["linear"]) == []
