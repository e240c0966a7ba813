"""The linear probe against scikit-learn's LogisticRegression on the same objective."""
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from audiotl_jax.errors import UserError
from audiotl_jax.scores import probe


def _blobs(seed, classes, noise, n=400, m=300, dim=16):
  rng = np.random.default_rng(seed)
  means = 2 * rng.normal(size=(classes, dim))
  y, y_test = rng.integers(0, classes, n), rng.integers(0, classes, m)
  x = means[y] + noise * rng.normal(size=(n, dim))
  x_test = means[y_test] + noise * rng.normal(size=(m, dim))
  return x + 5.0, y * 3 + 1, x_test + 5.0, y_test * 3 + 1  # offset features, gapped labels


def _sklearn(x, y, x_test):
  scaler = StandardScaler().fit(x)
  # Same objective: C = 1 / (l2 * N) for the mean loss + l2/2 |W|^2.
  clf = LogisticRegression(C=1 / (probe.L2 * len(x)), tol=1e-10, max_iter=10_000)
  clf.fit(scaler.transform(x), y)
  return clf, clf.predict_proba(scaler.transform(x_test))


@pytest.mark.parametrize("classes,noise", [(4, 0.2), (5, 3.0), (2, 3.5)],
                         ids=["separable", "noisy", "noisy-binary"])
def test_probe_agrees_with_sklearn(classes, noise):
  x, y, x_test, y_test = _blobs(0, classes, noise)
  got = probe.linear_probe(x, y, x_test, y_test)
  clf, proba = _sklearn(x, y, x_test)
  expected = float(np.mean(clf.classes_[proba.argmax(axis=1)] == y_test))
  assert got["accuracy"] == pytest.approx(expected, abs=0.01)
  if noise < 1:
    assert got["accuracy"] == 1.0
  else:
    assert 0.4 < got["accuracy"] < 0.99  # noisy enough to tell two fits apart
  if classes == 2:
    assert got["auroc"] == pytest.approx(roc_auc_score(y_test == clf.classes_[1], proba[:, 1]),
                                         abs=0.005)
  else:
    assert "auroc" not in got
  # Deterministic: the same numbers twice.
  assert probe.linear_probe(x, y, x_test, y_test) == got


def test_auroc_counts_ties_as_half():
  scores = np.array([0.1, 0.4, 0.4, 0.8, 0.4, 0.9])
  positive = np.array([0, 0, 1, 1, 0, 1], bool)
  assert probe.auroc(scores, positive) == pytest.approx(roc_auc_score(positive, scores))
  assert np.isnan(probe.auroc(scores, np.zeros(6, bool)))


def test_unseen_test_classes_are_misses_and_bad_input_is_refused():
  x, y, x_test, y_test = _blobs(1, 3, 0.2)
  y_test = y_test.copy()
  y_test[:30] = 99  # a class the probe never saw
  got = probe.linear_probe(x, y, x_test, y_test)
  assert got["accuracy"] == pytest.approx(1 - 30 / len(y_test))
  with pytest.raises(UserError, match="test_features has 15 dims, train_features 16"):
    probe.linear_probe(x, y, x_test[:, :15], y_test)
  with pytest.raises(UserError, match="need at least 2 classes"):
    probe.linear_probe(x, np.zeros(len(x), int), x_test, y_test)
