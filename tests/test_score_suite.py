"""NCE, H-score, GBC, TransRate and LogME's regression form against float64 numpy references."""
import jax
import numpy as np
import pytest

from audiotl_jax import scores as tr
from audiotl_jax.errors import UserError
from audiotl_jax.bench import reference as ref


def clusters(n, d, c, *, spread=1.0, seed=0, offset=5.0):
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % c
  rng.shuffle(labels)
  features = rng.standard_normal((c, d))[labels] * 3.0 + spread * rng.standard_normal((n, d))
  return features + offset, labels


def rel(a, b):
  return abs(float(a) - float(b)) / abs(float(b))


CASES = {"n_gt_d": (120, 16, 4), "d_gt_n": (30, 80, 3)}  # (N, D, C)


def feature_scores(d):
  pca = 8 if d > 16 else None
  return {
      "hscore": (tr.hscore, ref.hscore),
      "gbc": (lambda f, y: tr.gbc(f, y, pca_dim=pca), lambda f, y: ref.gbc(f, y, pca_dim=pca)),
      "gbc_spherical": (lambda f, y: tr.gbc(f, y, covariance="spherical"),
                        lambda f, y: ref.gbc(f, y, covariance="spherical")),
      "transrate": (tr.transrate, ref.transrate),
      "logme": (tr.logme, ref.official_logme),
  }


@pytest.mark.parametrize("case", sorted(CASES))
def test_feature_scores_match_float64_references(case):
  n, d, c = CASES[case]
  features, labels = clusters(n, d, c, spread=4.0, seed=d)  # overlapping: GBC far from 0
  with jax.enable_x64(True):
    for name, (ours, theirs) in feature_scores(d).items():
      value = ours(features, labels)
      assert value.dtype == np.float64, name
      assert rel(value, theirs(features, labels)) <= 1e-6, name


@pytest.mark.parametrize("case", sorted(CASES))
def test_float32_error_is_as_documented(case):
  n, d, c = CASES[case]
  features, labels = clusters(n, d, c, spread=4.0, seed=d)
  # TransRate with D > N: log det of I + Gram / (n eps) with eigenvalues from 1 to ~1e6.
  bounds = {"hscore": 1e-4, "gbc": 1e-5, "gbc_spherical": 1e-5,
            "transrate": 1e-5 if n > d else 2e-3, "logme": 5e-5}
  for name, (ours, theirs) in feature_scores(d).items():
    if name == "hscore" and d > n:
      continue  # singular cov_f: documented as unreliable in float32
    value = ours(features, labels)
    assert value.dtype == np.float32, name
    assert rel(value, theirs(features, labels)) <= bounds[name], name


def test_logme_equals_official_value_for_full_rank_n_gt_d():
  features, labels = clusters(200, 12, 5, seed=1)
  with jax.enable_x64(True):
    ours = tr.logme(features, labels)
  assert rel(ours, ref.official_logme(features, labels, pad_log_det=False)) <= 1e-9


@pytest.mark.parametrize("n,d", [(90, 10), (20, 40)])
def test_logme_regression(n, d):
  features, labels = clusters(n, d, 3, seed=n)
  rng = np.random.default_rng(n)
  continuous = features[:, :2] @ rng.standard_normal((2, 2)) + 0.3 * rng.standard_normal((n, 2))
  onehot = np.eye(3)[labels]
  with jax.enable_x64(True):
    assert rel(tr.logme_regression(features, continuous),
               ref.official_logme(features, None, targets=continuous)) <= 1e-6
    # One-hot targets are the classification form; a 1-D target is one column.
    assert rel(tr.logme_regression(features, onehot), tr.logme(features, labels)) <= 1e-10
    assert rel(tr.logme_regression(features, continuous[:, 0]),
               ref.official_logme(features, None, targets=continuous[:, :1])) <= 1e-6
  with pytest.raises(UserError, match="target column.*constant.*column 1"):
    tr.logme_regression(features, np.stack([labels, np.zeros(n)], axis=1))


def test_nce_matches_reference_and_bounds():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 4, 300) * 10 + 3  # any integer values
  source = np.where(rng.random(300) < 0.7, labels // 10, rng.integers(0, 6, 300)) + 100
  with jax.enable_x64(True):
    value = tr.nce(source, labels)
  assert rel(value, ref.nce(source, labels)) <= 1e-12
  assert rel(tr.nce(source, labels), ref.nce(source, labels)) <= 1e-6  # float32
  # Deterministic source predictions give 0; a constant source gives -H(Y).
  assert float(tr.nce(labels, labels)) == pytest.approx(0.0, abs=1e-7)
  p = np.bincount(labels)[np.bincount(labels) > 0] / 300
  assert float(tr.nce(np.zeros(300, int), labels)) == pytest.approx(np.sum(p * np.log(p)),
                                                                     rel=1e-6)


def test_label_values_and_order_do_not_matter():
  features, labels = clusters(60, 6, 3, seed=2)
  relabelled = np.array([40, -7, 12])[labels]
  with jax.enable_x64(True):
    for name in ("hscore", "gbc", "gbc_spherical", "transrate", "nce"):
      fn, _ = tr.get_score(name)
      x = labels % 2 if name == "nce" else features
      assert rel(fn(x, relabelled), fn(x, labels)) <= 1e-10, name


def test_separated_clusters_beat_noise():
  features, labels = clusters(120, 16, 4, spread=0.3, seed=8)
  noise = np.random.default_rng(9).standard_normal(features.shape)
  for name in ("hscore", "gbc", "gbc_spherical", "transrate"):
    fn, higher_is_better = tr.get_score(name)
    assert higher_is_better
    assert fn(features, labels) > fn(noise, labels), name


@pytest.mark.parametrize("name", ["hscore", "gbc", "gbc_spherical", "transrate"])
@pytest.mark.parametrize("features,labels,message", [
    (np.ones((5, 3)) * np.arange(5)[:, None], np.zeros(5, int), "at least 2 classes"),
    (np.ones((4, 3)), np.array([0, 1, 0, 1]), "identical for every sample"),
    (np.where(np.eye(4, 3) > 0, np.nan, 1.0), np.array([0, 1, 0, 1]), "NaN/inf"),
    (np.arange(12.0).reshape(4, 3), np.array([0.0, 1.0, 0.0, 1.0]), "integers"),
])
def test_degenerate_input_raises(name, features, labels, message):
  with pytest.raises(UserError, match=message):
    tr.get_score(name)[0](features, labels)


def test_gbc_refusals():
  features, labels = clusters(20, 4, 2, seed=3)
  with pytest.raises(UserError, match="at least 2 samples per class.*\\[5\\]"):
    tr.gbc(features[:11], np.r_[labels[:10], 5])
  dead = features.copy()
  dead[labels == 0, 2] = 1.0  # constant within one class only
  with pytest.raises(UserError, match="feature 2 is constant within class"):
    tr.gbc(dead, labels)
  assert np.isfinite(float(tr.gbc(dead, labels, pca_dim=3)))  # PCA drops it
  # A dead unit (constant over every sample) is left out: the limit of vanishing variance.
  with_dead = np.concatenate([features, np.full((20, 1), 0.0)], axis=1)
  assert float(tr.gbc(with_dead, labels)) == pytest.approx(float(tr.gbc(features, labels)))
  with pytest.raises(UserError, match="pca_dim must be in"):
    tr.gbc(features, labels, pca_dim=5)
  with pytest.raises(UserError, match="unknown gbc covariance 'full'"):
    tr.gbc(features, labels, covariance="full")
  with pytest.raises(UserError, match="eps must be > 0"):
    tr.transrate(features, labels, eps=0.0)


@pytest.mark.parametrize("n,d", [(150, 10), (30, 50)])
def test_logme_heldout_matches_explicit_posterior(n, d):
  features, labels = clusters(n + 40, d, 3, spread=2.0, seed=d)
  train, val = (features[:n], labels[:n]), (features[n:], labels[n:])
  want = ref.logme_heldout(*train, *val)
  with jax.enable_x64(True):
    assert rel(tr.logme_heldout(*train, *val), want) <= 1e-6
  assert rel(tr.logme_heldout(*train, *val), want) <= 1e-4
  # Features that generalise beat noise on held-out clips.
  noise = np.random.default_rng(0).standard_normal(features.shape)
  assert tr.logme_heldout(*train, *val) > tr.logme_heldout(noise[:n], labels[:n], noise[n:],
                                                          labels[n:])
  with pytest.raises(UserError, match="absent from the training labels: \\[7\\]"):
    tr.logme_heldout(*train, val[0], np.r_[val[1][:-1], 7])
