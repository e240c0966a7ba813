"""The numbers every analysis table shares: correlations, summaries and tests over seeds, formats.

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


# ------------------------------------------------------------------ over seeds

LEVEL = 0.95  # every interval of the report: two-sided 95 %
ALPHA = 0.05  # and every test's significance threshold
SINGLE = "single seed: no test"


def t_interval(values, level: float = LEVEL) -> tuple[float, float]:
  """The t-interval of the mean of the finite `values`: mean ± t(level, n-1) * std / sqrt(n);
  (NaN, NaN) below two values, where the spread is unknown."""
  v = finite(values)
  if len(v) < 2:
    return float("nan"), float("nan")
  half = stats.t.ppf((1 + level) / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
  return float(v.mean() - half), float(v.mean() + half)


def describe(values, level: float = LEVEL) -> dict | None:
  """`summary` plus its t-interval `ci` = (low, high); None when no value is finite."""
  s = summary(values)
  return s and {**s, "ci": t_interval(values, level)}


def paired(a: dict, b: dict, *, level: float = LEVEL, alpha: float = ALPHA) -> dict:
  """A against B paired by seed: `a` and `b` map seed -> result. Only seeds both have count, so a
  seed's shared luck (data order, initialisation of the new head) cancels in the difference.

  Returns n (pairs), the means of A and B over those seeds, the mean difference A - B with its
  t-interval, the paired t-test's two-sided p-value, and `verdict`: "yes" (A significantly
  better), "no" (significantly worse), "not significant", or `SINGLE` below two pairs.
  """
  seeds = sorted(s for s in set(a) & set(b) if np.isfinite(a[s]) and np.isfinite(b[s]))
  xa, xb = (np.asarray([x[s] for s in seeds], float) for x in (a, b))
  d = xa - xb
  out = {"n": len(seeds), "mean_a": float(xa.mean()) if seeds else float("nan"),
         "mean_b": float(xb.mean()) if seeds else float("nan"),
         "diff": float(d.mean()) if seeds else float("nan"), "ci": t_interval(d, level),
         "p": float("nan")}
  if len(seeds) < 2:
    return {**out, "verdict": SINGLE}
  if d.std(ddof=1) <= 1e-12 * max(1.0, abs(d.mean())):
    # Every seed differs by the same amount: t is infinite (scipy only warns about precision).
    out["p"] = 0.0 if d.mean() != 0 else 1.0
  else:
    out["p"] = float(stats.ttest_rel(xa, xb).pvalue)
  return {**out, "verdict": verdict(out["diff"], out["p"], len(seeds), alpha)}


def verdict(diff: float, p: float, n: int, alpha: float = ALPHA) -> str:
  """"Is A better?" from a paired test: yes / no only when the difference is significant."""
  if n < 2:
    return SINGLE
  if not p < alpha:  # NaN p (no finite pair) is no evidence either
    return "not significant"
  return "yes" if diff > 0 else "no"


def fmt_summary(s: dict | None, digits: int = 3) -> str:
  """`mean ± std [low, high] (n=k)` of a `describe`; the mean and n alone for one seed, whose
  spread is unknown (a 0 there would read as "no spread")."""
  if not s:
    return NA
  if s["n"] < 2:
    return f"{s['mean']:.{digits}f} (n=1)"
  lo, hi = s["ci"]
  return (f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}] "
          f"(n={s['n']})")
