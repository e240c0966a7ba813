"""Linear CKA, full and minibatch, against numpy references written from the papers' formulas."""
import numpy as np
import pytest
from scipy.stats import ortho_group

from audiotl_jax.errors import UserError
from audiotl_jax.scores import cka


def _hsic_biased(k, l):
  n = len(k)
  h = np.eye(n) - 1 / n
  return np.trace(k @ h @ l @ h) / (n - 1) ** 2


def reference_cka(x, y):
  """Kornblith et al. (2019), eq. 3 with linear kernels, through n x n centring matrices."""
  k, l = x @ x.T, y @ y.T
  return _hsic_biased(k, l) / np.sqrt(_hsic_biased(k, k) * _hsic_biased(l, l))


def _hsic_unbiased(k, l):
  """Song et al. (2012), eq. 5, term by term."""
  n = len(k)
  k, l = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
  one = np.ones(n)
  return (np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
          - 2 / (n - 2) * one @ k @ l @ one) / (n * (n - 3))


def reference_minibatch_cka(x, y, batches):
  """Nguyen et al. (2021), eq. 2: HSIC_1 averaged over the minibatches, then CKA."""
  terms = np.array([[_hsic_unbiased(a @ a.T, b @ b.T) for a, b in pairs]
                    for pairs in ([(x[i], y[i]), (x[i], x[i]), (y[i], y[i])] for i in batches)])
  xy, xx, yy = terms.mean(axis=0)
  return xy / np.sqrt(xx * yy)


@pytest.fixture(scope="module")
def pair():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(120, 12)) + 3.0
  y = x @ rng.normal(size=(12, 20)) + 0.8 * rng.normal(size=(120, 20))
  return x, y


def test_full_cka_matches_the_reference_and_is_symmetric(pair):
  x, y = pair
  value = float(cka.linear_cka(x, y))
  assert value == pytest.approx(reference_cka(x, y), rel=1e-5)
  assert float(cka.linear_cka(y, x)) == pytest.approx(value, rel=1e-6)
  assert float(cka.linear_cka(x, x)) == pytest.approx(1, abs=1e-6)
  # N < D: the sample-space form gives the same number.
  wide_x, wide_y = x[:10], y[:10]
  assert float(cka.linear_cka(wide_x, wide_y)) == pytest.approx(
      reference_cka(wide_x, wide_y), rel=1e-5)


def test_invariances(pair):
  x, y = pair
  value = float(cka.linear_cka(x, y))
  q = ortho_group.rvs(x.shape[1], random_state=1)
  assert float(cka.linear_cka(x @ q, y)) == pytest.approx(value, rel=1e-5)
  assert float(cka.linear_cka(7.5 * x, 0.01 * y)) == pytest.approx(value, rel=1e-5)
  # An invertible but not orthogonal map (one direction stretched) changes it.
  a = np.eye(x.shape[1])
  a[0, 0] = 25.0
  assert abs(float(cka.linear_cka(x @ a, y)) - value) > 0.05


def test_minibatch_matches_its_reference_and_shares_the_properties(pair):
  x, y = pair
  batches = np.array_split(np.arange(len(x)), 3)
  value = cka.minibatch_cka(x, y, batch_size=40, shuffle=False)
  assert value == pytest.approx(reference_minibatch_cka(x, y, batches), rel=1e-4)
  assert cka.minibatch_cka(y, x, batch_size=40, shuffle=False) == pytest.approx(value, rel=1e-5)
  assert cka.minibatch_cka(x, x, batch_size=40) == pytest.approx(1, abs=1e-5)
  q = ortho_group.rvs(x.shape[1], random_state=1)
  assert cka.minibatch_cka(x @ q * 3, y + 100, batch_size=40, shuffle=False) == pytest.approx(
      value, rel=1e-3)
  with pytest.raises(UserError, match="at least 4 clips"):
    cka.minibatch_cka(x[:3], y[:3])
  with pytest.raises(UserError, match="120 rows but y has 119"):
    cka.minibatch_cka(x, y[:119])


def test_minibatch_estimate_approaches_the_full_one_for_large_n(tmp_path):
  rng = np.random.default_rng(2)
  n = 20000
  x = rng.normal(size=(n, 16)).astype(np.float32)
  y = np.tanh(x @ rng.normal(size=(16, 24))) + 0.5 * rng.normal(size=(n, 24))
  # Streamed from memory maps, as the score stage's exported embeddings are read.
  np.save(tmp_path / "x.npy", x)
  np.save(tmp_path / "y.npy", y.astype(np.float32))
  streamed = cka.minibatch_cka(np.load(tmp_path / "x.npy", mmap_mode="r"),
                               np.load(tmp_path / "y.npy", mmap_mode="r"), batch_size=500)
  assert streamed == pytest.approx(float(cka.linear_cka(x, y)), abs=0.01)
