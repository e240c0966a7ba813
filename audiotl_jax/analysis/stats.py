"""The numbers every analysis table shares: correlations, summaries over seeds, and their format.

One place for each so that the report, the ranking harness and the scaling curves agree: the same
correlation is never computed two ways, and a missing number reads the same in every table.
"""
import math

import numpy as np
from scipy import stats

# name -> scipy function; `weightedtau` is Kendall's tau with hyperbolic weights that count swaps
# among the top-ranked items most.
CORRELATIONS = {"pearson": stats.pearsonr, "spearman": stats.spearmanr,
                "kendall": stats.kendalltau, "weighted_tau": stats.weightedtau}

NA = "n/a"  # how a table shows a number that is missing or undefined


def correlations(xs, ys, methods=tuple(CORRELATIONS)) -> dict:
  """{method: coefficient} of `xs` with `ys`; NaN where undefined (fewer than three points, or
  either side constant), rather than scipy's warnings."""
  xs, ys = np.asarray(xs, float), np.asarray(ys, float)
  if len(xs) < 3 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
    return dict.fromkeys(methods, float("nan"))
  return {m: float(CORRELATIONS[m](xs, ys)[0]) for m in methods}


def finite(values) -> np.ndarray:
  """The finite values as floats: a metric is NaN where it was undefined (e.g. a split without a
  positive clip, a constant bootstrap resample), and such values are left out, not averaged in."""
  v = np.asarray(values, float)
  return v[np.isfinite(v)]


def summary(values) -> dict | None:
  """Mean, sample std and count of the finite values; None when there are none."""
  v = finite(values)
  if not len(v):
    return None
  return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
          "n": len(v)}


def fmt(x, digits: int = 4, ci=None) -> str:
  """`x` with `digits` decimals, then its interval `ci` = (low, high) if given and defined."""
  if x is None or (isinstance(x, float) and math.isnan(x)):
    return NA
  return f"{x:.{digits}f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and not math.isnan(ci[0])
                              else "")
