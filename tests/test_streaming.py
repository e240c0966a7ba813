"""Streaming scores (chunks, sufficient statistics, 8-device mesh) equal the in-memory ones."""
import jax
import numpy as np
import pytest

from audiotl_jax import scores as tr
from audiotl_jax.errors import UserError
from audiotl_jax.train import mesh as mesh_lib
from audiotl_jax.scores import streaming


def data(n=203, d=12, c=4, z=6, seed=0):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, c, n) * 7 - 3  # any integer values
  features = rng.standard_normal((c, d))[(labels + 3) // 7] * 2 + 3 * rng.standard_normal((n, d))
  logits = rng.standard_normal((n, z)) + np.eye(c, z)[(labels + 3) // 7] * 2
  probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  features[:, 3] = 0.0  # a dead unit, as post-ReLU features have
  return features + 10.0, labels, probs  # an offset, too


def in_memory(features, labels, probs, pca_dim):
  return {
      "nc_score": tr.nc_score(features, labels), "logme": tr.logme(features, labels),
      "hscore": tr.hscore(features, labels),
      "gbc": tr.gbc(features, labels, pca_dim=pca_dim),
      "gbc_spherical": tr.gbc(features, labels, covariance="spherical", pca_dim=pca_dim),
      "transrate": tr.transrate(features, labels), "leep": tr.leep(probs, labels),
      "nce": tr.nce(probs.argmax(axis=1), labels)}


@pytest.mark.parametrize("pca_dim", [None, 5])
def test_streaming_equals_in_memory_on_eight_devices(devices, tmp_path, pca_dim):
  features, labels, probs = data()
  path = tmp_path / "features.npy"
  np.save(path, features)
  mmap = np.load(path, mmap_mode="r")  # read chunk by chunk, never whole
  mesh = mesh_lib.make_mesh()
  assert mesh.devices.size == 8
  with jax.enable_x64(True):
    # 60 rows per chunk rounds up to 64 (8 devices): 4 chunks, the last one padded.
    got = streaming.streaming_scores(mmap, labels, scores=streaming.STREAMABLE, probs=probs,
                                     chunk_size=60, mesh=mesh, gbc_pca_dim=pca_dim)
    want = in_memory(features, labels, probs, pca_dim)
  for name in streaming.STREAMABLE:
    assert got[name] == pytest.approx(float(want[name]), rel=1e-9), name


@pytest.mark.slow
def test_streaming_float32_close_to_in_memory(devices):
  features, labels, probs = data(seed=1)
  got = streaming.streaming_scores(features, labels, scores=streaming.STREAMABLE, probs=probs,
                                   chunk_size=64)
  want = in_memory(features, labels, probs, None)
  for name in streaming.STREAMABLE:
    assert got[name] == pytest.approx(float(want[name]), rel=1e-4), name


def test_streaming_refusals(devices):
  features, labels, probs = data(n=40, d=12)
  with pytest.raises(UserError, match="unknown streamable score 'logm'"):
    streaming.streaming_scores(features, labels, scores=["logm"])
  with pytest.raises(UserError, match="need `probs`"):
    streaming.streaming_scores(features, labels, scores=["leep"])
  with pytest.raises(UserError, match="needs N > D"):
    streaming.streaming_scores(features[:10], labels[:10], scores=["logme"])
  with pytest.raises(UserError, match="at least 2 samples per class"):
    streaming.streaming_scores(features, np.r_[labels[:-1], 99], scores=["nc_score"])
  bad = features.copy()
  bad[33, 1] = np.nan
  with pytest.raises(UserError, match="NaN/inf values \\(first in row 33\\)"):
    streaming.streaming_scores(bad, labels, scores=["hscore"], chunk_size=16)
  with pytest.raises(UserError, match="identical for every sample"):
    streaming.streaming_scores(np.ones_like(features), labels, scores=["hscore"])
  with pytest.raises(UserError, match="not probabilities"):
    streaming.streaming_scores(features, labels, scores=["leep"], probs=probs * 2)
