"""Tests for audiotl_jax.transferability against independent float64 numpy references."""
import jax
import numpy as np
import pytest

from audiotl_jax import scores as tr
from audiotl_jax.errors import UserError

# ---------------------------------------------------------------------------------------------
# Independent numpy references (float64), written from the definitions.


def nc_reference(features, labels):
  features = np.asarray(features, np.float64)
  classes = sorted(set(labels.tolist()))
  means = {c: features[labels == c].mean(axis=0) for c in classes}
  within = np.mean([np.linalg.norm(f - means[y]) for f, y in zip(features, labels)])
  between = [np.linalg.norm(means[a] - means[b])
             for i, a in enumerate(classes) for b in classes[i + 1:]]
  return within / np.mean(between)


def _official_truncated_svd(f):
  """thuml/LogME's N > D branch: eigen-decompose F^T F, keep singular values > 1e-10."""
  _, s, vh = np.linalg.svd(f.T @ f)
  s = np.sqrt(s)
  k = int(np.sum(s > 1e-10))
  u = (f @ vh.T)[:, :k] / s[:k]
  return u, s[:k], vh[:k]


def logme_reference(f, y, *, return_details=False, pad=True):
  """thuml/LogME `_fit_fixed_point`, step by step, with log det over all D eigenvalues.

  The one deliberate change from the official code: sigma is zero-padded to length D in the
  log det term (thuml/LogME issue #23 / PR #24), which only matters when rank(F) < D; that is
  `logme_exact`. `pad=False` is the official value, `logme`.
  """
  f = np.asarray(f, np.float64)
  n, d = f.shape
  if n > d:
    u, s, vh = _official_truncated_svd(f)
  else:
    u, s, vh = np.linalg.svd(f, full_matrices=False)
  s = s.reshape(-1, 1)
  sigma = s ** 2
  sigma_full = np.zeros((d, 1))
  sigma_full[:sigma.shape[0]] = sigma
  if not pad:
    sigma_full = sigma
  evidences, details = [], []
  for i in range(int(y.max()) + 1):
    y_ = (y == i).astype(np.float64).reshape(-1, 1)
    x = u.T @ y_
    x2 = x ** 2
    res_x2 = (y_ ** 2).sum() - x2.sum()
    alpha, beta = 1.0, 1.0
    for _ in range(11):
      t = alpha / beta
      gamma = (sigma / (sigma + t)).sum()
      m2 = (sigma * x2 / ((t + sigma) ** 2)).sum()
      res2 = (x2 / ((1 + sigma / t) ** 2)).sum() + res_x2
      alpha = gamma / (m2 + 1e-5)
      beta = (n - gamma) / (res2 + 1e-5)
      t_ = alpha / beta
      if abs(t_ - t) / t <= 1e-3:
        break
    evidence = (d / 2.0 * np.log(alpha) + n / 2.0 * np.log(beta)
                - 0.5 * np.sum(np.log(alpha + beta * sigma_full))
                - beta / 2.0 * res2 - alpha / 2.0 * m2 - n / 2.0 * np.log(2 * np.pi))
    evidences.append(evidence / n)
    details.append((alpha, beta, t, y_[:, 0]))
  score = float(np.mean(evidences))
  return (score, evidences, details) if return_details else score


def leep_reference(probs, labels):
  probs = np.asarray(probs, np.float64)
  n = probs.shape[0]
  classes = sorted(set(labels.tolist()))
  joint = np.stack([probs[labels == c].sum(axis=0) / n for c in classes])  # P(y, z)
  conditional = joint / joint.sum(axis=0, keepdims=True)  # P(y | z)
  row = {c: i for i, c in enumerate(classes)}
  return np.mean([np.log(conditional[row[y]] @ p) for p, y in zip(probs, labels)])


# ---------------------------------------------------------------------------------------------
# Data.


def clusters(n, d, num_classes, *, spread, seed, offset=0.0):
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % num_classes
  rng.shuffle(labels)
  centers = rng.standard_normal((num_classes, d)) * 3.0
  features = centers[labels] + spread * rng.standard_normal((n, d)) + offset
  return features, labels


def source_probs(n, z, seed):
  logits = np.random.default_rng(seed).standard_normal((n, z)) * 2.0
  e = np.exp(logits - logits.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


def rel(a, b):
  return abs(float(a) - float(b)) / abs(float(b))


CASES = {  # name: (N, D, C, spread)
    "n_gt_d": (120, 16, 4, 1.0),  # the official code's truncated-SVD branch
    "d_gt_n": (30, 80, 3, 1.0),  # its thin-SVD branch; logme_exact pads D - N eigenvalues
    # N == D takes the thin-SVD branch; LogME runs into the 11-iteration cap for one class and
    # stops early (after 6 and 4 steps) for the others, so both exits are exercised.
    "n_eq_d": (24, 24, 3, 2.0),
}

# ---------------------------------------------------------------------------------------------
# Agreement with the references, float64 and float32.


@pytest.mark.parametrize("case", sorted(CASES))
def test_scores_match_float64_references(case):
  n, d, c, spread = CASES[case]
  features, labels = clusters(n, d, c, spread=spread, seed=n + d, offset=5.0)
  probs = source_probs(n, 7, seed=d)
  with jax.enable_x64(True):
    nc = tr.nc_score(features, labels)
    lm = tr.logme(features, labels)
    exact = tr.logme_exact(features, labels)
    lp = tr.leep(probs, labels)
    assert nc.dtype == lm.dtype == exact.dtype == lp.dtype == np.float64
  assert rel(nc, nc_reference(features, labels)) <= 1e-6
  assert rel(lm, logme_reference(features, labels, pad=False)) <= 1e-6
  assert rel(exact, logme_reference(features, labels)) <= 1e-6
  assert rel(lp, leep_reference(probs, labels)) <= 1e-6


@pytest.mark.parametrize("case", sorted(CASES))
def test_float32_is_close_to_float64(case):
  # The bounds the docstrings quote; observed errors are an order of magnitude below them.
  n, d, c, spread = CASES[case]
  features, labels = clusters(n, d, c, spread=spread, seed=n + d, offset=5.0)
  probs = source_probs(n, 7, seed=d)
  nc, lm, lp = tr.nc_score(features, labels), tr.logme(features, labels), tr.leep(probs, labels)
  exact = tr.logme_exact(features, labels)
  assert nc.dtype == lm.dtype == exact.dtype == lp.dtype == np.float32
  assert rel(nc, nc_reference(features, labels)) <= 2e-6
  assert rel(lm, logme_reference(features, labels, pad=False)) <= 5e-5
  assert rel(exact, logme_reference(features, labels)) <= 5e-5
  assert rel(lp, leep_reference(probs, labels)) <= 2e-6


def test_logme_reference_evidence_matches_direct_d_dimensional_formula():
  # Checks the SVD-basis shortcuts (and the D - N padded eigenvalues when D > N) against the
  # evidence computed with explicit D x D matrices: m is the ridge solution at the last t.
  for n, d in ((30, 80), (80, 12)):
    features, labels = clusters(n, d, 3, spread=1.0, seed=d)
    _, evidences, details = logme_reference(features, labels, return_details=True)
    for evidence, (alpha, beta, t, y) in zip(evidences, details):
      m = np.linalg.solve(features.T @ features + t * np.eye(d), features.T @ y)
      _, log_det = np.linalg.slogdet(alpha * np.eye(d) + beta * features.T @ features)
      direct = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - 0.5 * log_det
                - beta / 2 * np.sum((y - features @ m) ** 2) - alpha / 2 * m @ m
                - n / 2 * np.log(2 * np.pi)) / n
      assert rel(evidence, direct) <= 1e-8


def test_logme_rank_deficient_features():
  # Dead (all-zero) units and a duplicated unit, N > D: rank 10 < D = 13.
  features, labels = clusters(100, 10, 4, spread=1.0, seed=3)
  features = np.concatenate([features, np.zeros((100, 2)), features[:, :1]], axis=1)
  with jax.enable_x64(True):
    ours = tr.logme(features, labels)
  assert rel(ours, logme_reference(features, labels)) <= 1e-6


def test_cores_take_contiguous_labels_inside_jit():
  features, labels = clusters(40, 8, 4, spread=1.0, seed=5)
  with jax.enable_x64(True):
    score = jax.jit(lambda f, y: tr.logme_core(f, y, num_classes=4))(features, labels)
  assert rel(score, logme_reference(features, labels)) <= 1e-6


# ---------------------------------------------------------------------------------------------
# Invariances and ordering.


def test_label_values_do_not_matter():
  # Same shapes as CASES["n_eq_d"], so the jitted cores are reused rather than recompiled.
  features, labels = clusters(24, 24, 3, spread=2.0, seed=7)
  probs = source_probs(24, 7, seed=7)
  sparse = np.array([3, 7, 9])[labels]
  shuffled = np.array([9, 3, 7])[labels]  # also reorders the classes
  with jax.enable_x64(True):
    for score, x in ((tr.nc_score, features), (tr.logme, features), (tr.leep, probs)):
      base = float(score(x, labels))
      assert float(score(x, sparse)) == base
      assert rel(score(x, shuffled), base) <= 1e-12


def test_separated_clusters_beat_noise():
  # Same shapes as CASES["n_gt_d"] (float32).
  features, labels = clusters(120, 16, 4, spread=0.3, seed=8)
  noise = np.random.default_rng(9).standard_normal(features.shape)
  assert tr.nc_score(features, labels) < tr.nc_score(noise, labels)
  assert tr.logme(features, labels) > tr.logme(noise, labels)
  # LEEP: a source head whose top class tracks the target class beats an uninformative one.
  informative = np.full((120, 7), 0.05)
  informative[np.arange(120), labels] = 0.7
  assert tr.leep(informative, labels) > tr.leep(source_probs(120, 7, seed=10), labels)


# ---------------------------------------------------------------------------------------------
# Refusals and the registry.


@pytest.mark.parametrize("score", [tr.nc_score, tr.logme])
@pytest.mark.parametrize("features,labels,message", [
    (np.ones((5, 3)) * np.arange(5)[:, None], np.zeros(5, int), "at least 2 classes"),
    (np.arange(12.0).reshape(4, 3), np.array([0, 1, 0]), "4 rows but labels has 3"),
    (np.where(np.eye(4, 3) > 0, np.nan, 1.0), np.array([0, 1, 0, 1]), "NaN/inf"),
    (np.where(np.eye(4, 3) > 0, np.inf, 1.0), np.array([0, 1, 0, 1]), "NaN/inf"),
    (np.ones((4, 3)), np.array([0, 1, 0, 1]), "identical for every sample"),
    (np.arange(12.0).reshape(4, 3), np.array([0.0, 1.0, 0.0, 1.0]), "integers"),
    (np.arange(24.0).reshape(4, 3, 2), np.array([0, 1, 0, 1]), "2-D"),
])
def test_degenerate_features_raise(score, features, labels, message):
  with pytest.raises(UserError, match=message):
    score(features, labels)


def test_nc_score_refuses_single_sample_class():
  features = np.random.default_rng(0).standard_normal((5, 3))
  with pytest.raises(UserError, match=r"at least 2 samples per class.*\[42\]"):
    tr.nc_score(features, np.array([1, 1, 2, 2, 42]))


@pytest.mark.parametrize("probs,labels,message", [
    (np.full((4, 3), 1 / 3), np.zeros(4, int), "at least 2 classes"),
    (np.full((4, 3), 0.3), np.array([0, 1, 0, 1]), "sum to 1"),
    (np.array([[0.5, 0.5, 0.0]] * 4), np.array([0, 1, 0, 1]), "zero probability"),
    (np.array([[1.5, -0.5]] * 4), np.array([0, 1, 0, 1]), "negative"),
    (np.full((4, 2), 0.5), np.array([0, 1, 0]), "4 rows but labels has 3"),
    (np.where(np.eye(4, 2) > 0, np.nan, 0.5), np.array([0, 1, 0, 1]), "NaN/inf"),
])
def test_degenerate_leep_input_raises(probs, labels, message):
  with pytest.raises(UserError, match=message):
    tr.leep(probs, labels)


def test_registry():
  assert set(tr.SCORES) == {"nc_score", "logme", "logme_exact", "leep", "nce", "hscore", "gbc",
                            "gbc_spherical", "transrate"}
  assert set(tr.INPUTS) == set(tr.SCORES)
  fn, higher_is_better = tr.get_score("logme")
  assert fn is tr.logme and higher_is_better
  assert tr.get_score("nc_score") == (tr.nc_score, False)
  assert tr.get_score("leep") == (tr.leep, True)
  with pytest.raises(UserError, match="unknown score 'logm'.*leep, logme, logme_exact, nc_score"):
    tr.get_score("logm")
