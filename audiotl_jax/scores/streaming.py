"""The scores for N larger than memory: sufficient statistics accumulated chunk by chunk.

`streaming_scores(features, labels, ...)` reads `features` (anything sliceable by rows, e.g. a
memory-mapped `.npy`) in chunks of `chunk_size` rows, places each chunk on the mesh sharded over
its `data` axis, and adds it into replicated accumulators with one jitted update (XLA inserts
the cross-device sums). Only the labels (N integers) are held whole.

  pass 1: counts n_c, per-class sums, the Gram matrix of the shifted features (f - s) and, for
          LEEP and NCE, the source-head joints. The shift s (the first chunk's mean) keeps the
          centred covariance free of the |f|^2 - |mu|^2 cancellation in float32.
  pass 2: only when a score needs distances to class means (NC score), per-class variances
          around the exact means (GBC; in PCA coordinates when `gbc_pca_dim` is set) or the
          final conditional (LEEP).

The statistics then go through the same `*_from_moments` functions as the in-memory scores,
so the results agree with them to rounding (tested on 8 devices). LogME needs N > D (the Gram
route); TransRate's per-class Gram matrices (C x D x D: 1.2 GB in float32 at D = 768, C = 527)
are accumulated on the host with numpy BLAS, class by class. One process drives all of its
devices; several hosts would each accumulate their rows and add the statistics once at the end.
"""
import functools
import threading
from queue import Queue
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from audiotl_jax.errors import UserError, unknown_name
from audiotl_jax.train import mesh as mesh_lib
from audiotl_jax.scores import _checks
from audiotl_jax.scores import bhattacharyya
from audiotl_jax.scores import coding_rate
from audiotl_jax.scores import evidence
from audiotl_jax.scores import h_score
from audiotl_jax.scores import nc
from audiotl_jax.scores import source

STREAMABLE = ("nc_score", "logme", "hscore", "gbc", "gbc_spherical", "transrate", "leep", "nce")


def streaming_scores(features, labels, *, scores: Iterable[str], probs=None,
                     chunk_size: int = 65536, mesh=None, gbc_pca_dim: int | None = None,
                     transrate_eps: float = coding_rate.EPS) -> dict[str, float]:
  """{score: value} for (N, D) `features` read in chunks; same definitions as the in-memory ones.

  Args:
    features: (N, D) array-like sliceable by rows (np.memmap, h5py dataset, ...).
    labels: (N,) integers, any values, at least 2 classes.
    scores: names from `STREAMABLE`. `gbc` / `gbc_spherical` use `gbc_pca_dim` (None: none).
    probs: (N, Z) source-head probabilities, sliceable, for `leep` and `nce` (NCE takes their
      argmax as the hard source labels).
    chunk_size: rows per chunk; rounded up to a multiple of the mesh's devices.
    mesh: a `Mesh` with a `data` axis (default: every device).
  """
  scores = list(scores)
  for name in scores:
    if name not in STREAMABLE:
      raise unknown_name("streamable score", name, STREAMABLE)
  num_rows, dim = features.shape
  labels, classes, counts = _checks.check_labels(labels, num_rows, "features")
  if {"nc_score", "gbc", "gbc_spherical"} & set(scores):
    _checks.require_two_per_class(classes, counts, "+".join(scores))
  if {"leep", "nce"} & set(scores) and probs is None:
    raise UserError("leep and nce need `probs`, the source head's probabilities")
  if "logme" in scores and num_rows <= dim:
    raise UserError(f"streaming logme needs N > D (got N={num_rows}, D={dim}); such a matrix "
                    "fits in memory: use transferability.logme")
  mesh = mesh or mesh_lib.make_mesh()
  devices = mesh.devices.size
  chunk_size = -(-min(chunk_size, num_rows) // devices) * devices
  num_classes = classes.size
  reader = _Reader(features, probs, labels, chunk_size, NamedSharding(mesh, P(mesh_lib.DATA)))
  shift = np.asarray(features[:min(chunk_size, num_rows)], np.float64).mean(axis=0)
  shift = jnp.asarray(shift, _checks.float_dtype())
  dtype = shift.dtype

  # Pass 1.
  stats = {"counts": jnp.zeros(num_classes, dtype), "sums": jnp.zeros((num_classes, dim), dtype),
           "gram": jnp.zeros((dim, dim), dtype)}
  if probs is not None and {"leep", "nce"} & set(scores):
    z = probs.shape[1]
    stats["joint"] = jnp.zeros((num_classes, z), dtype)
    stats["hard"] = jnp.zeros((num_classes, z), dtype)
  grams = np.zeros((num_classes, dim, dim), dtype) if "transrate" in scores else None
  for chunk in reader:
    stats = jax.block_until_ready(_pass1(stats, shift, *chunk, num_classes=num_classes))
    if grams is not None:
      _add_class_grams(grams, chunk, shift)
  n = num_rows
  sums, counts_f = stats["sums"], stats["counts"]
  total = jnp.sum(sums, axis=0)  # sum of (f - s)
  mean_s = total / n
  scatter = stats["gram"] - n * jnp.outer(mean_s, mean_s)  # centred F^T F
  if not np.asarray(jnp.diagonal(scatter) > 0).any():
    raise UserError("features are identical for every sample, so they carry no information "
                    "about the labels (is the feature extractor broken?)")
  means_s = sums / counts_f[:, None]  # class means minus the shift
  out = {}
  if "logme" in scores:
    raw_gram = (stats["gram"] + jnp.outer(total, shift) + jnp.outer(shift, total)
                + n * jnp.outer(shift, shift))
    fty = (sums + counts_f[:, None] * shift).T
    out["logme"] = evidence.logme_from_moments(raw_gram, fty, counts_f, num_samples=n)
  if "hscore" in scores:
    out["hscore"] = h_score.hscore_from_moments(scatter / (n - 1), means_s - mean_s, counts_f,
                                                num_samples=n)
  if "transrate" in scores:
    out["transrate"] = _transrate(grams, scatter, sums, counts_f, mean_s, n=n, eps=transrate_eps)
  if "nce" in scores:
    out["nce"] = source.nce_from_counts(stats["hard"])
  if "leep" in scores:
    empty = np.asarray(jnp.sum(stats["joint"], axis=0) <= 0)
    if empty.any():
      raise UserError(f"{int(empty.sum())} source class(es) get zero probability on every "
                      f"sample (e.g. column {int(np.argmax(empty))}); drop those columns")

  # Pass 2.
  gbc_names = [s for s in scores if s in ("gbc", "gbc_spherical")]
  if {"nc_score", "leep"} & set(scores) or gbc_names:
    pca = None
    if gbc_names and gbc_pca_dim is not None:
      if not 1 <= gbc_pca_dim <= min(n, dim):
        raise UserError(f"gbc: pca_dim must be in [1, min(N, D) = {min(n, dim)}], got "
                        f"{gbc_pca_dim}")
      pca = bhattacharyya.principal_directions(scatter, pca_dim=gbc_pca_dim)
    conditional = (source.leep_conditional(stats["joint"]) if "leep" in scores else
                   jnp.zeros((num_classes, 1), dtype))
    second = {"distance": jnp.zeros((), dtype), "log_likelihood": jnp.zeros((), dtype),
              "squares": jnp.zeros((num_classes, dim if pca is None else gbc_pca_dim), dtype)}
    for chunk in reader:
      second = _pass2(second, shift, means_s, pca, conditional, *chunk, num_classes=num_classes,
                      with_leep="leep" in scores)
      jax.block_until_ready(second)
    if "nc_score" in scores:
      out["nc_score"] = second["distance"] / n / nc.mean_pairwise_distance(means_s)
    if "leep" in scores:
      out["leep"] = second["log_likelihood"] / n
    if gbc_names:
      means = means_s if pca is None else jnp.matmul(means_s, pca, precision=_checks.HIGHEST)
      variances = second["squares"] / counts_f[:, None]
      # As `gbc`: features constant over all samples (zero scatter) are left out.
      spread = jnp.diagonal(scatter) if pca is None else jnp.sum(
          jnp.matmul(scatter, pca, precision=_checks.HIGHEST) * pca, axis=0)
      active = bhattacharyya.active_features(spread)
      means, variances = means[:, active], variances[:, active]
      for name in gbc_names:
        covariance = "spherical" if name == "gbc_spherical" else "diagonal"
        bhattacharyya.check_variances(np.asarray(means + (0 if pca is not None else
                                                          shift[active])),
                                      np.asarray(variances), classes, covariance)
        out[name] = bhattacharyya.gbc_from_moments(means, variances,
                                                   spherical=covariance == "spherical")
  return {name: float(out[name]) for name in scores}


def _prefetched(chunks):
  """Reads the next chunk in a thread while the current one is computed; at most two are held.

  (Without the bound, asynchronous dispatch lets the loop run ahead and hold every chunk.)
  """
  queue, done = Queue(maxsize=1), object()

  def fill():
    try:
      for chunk in chunks:
        queue.put(chunk)
    except BaseException as e:  # re-raised in the consumer: a UserError names the bad row
      queue.put(e)
    queue.put(done)

  threading.Thread(target=fill, daemon=True).start()
  while (item := queue.get()) is not done:
    if isinstance(item, BaseException):
      raise item
    yield item


class _Reader:
  """Iterates (features, weights, labels, probs) chunks, padded to `chunk_size` and sharded."""

  def __init__(self, features, probs, labels, chunk_size, sharding):
    self.features, self.probs, self.labels = features, probs, labels
    self.chunk_size, self.sharding = chunk_size, sharding
    # Fixed here, in the caller's thread: `jax.enable_x64` is thread-local, and reading happens
    # in a prefetch thread.
    self.dtype = _checks.float_dtype()

  def __iter__(self):
    """Sharded device arrays; the host reading runs one chunk ahead in a thread."""
    for chunk in _prefetched(self._host_chunks()):
      yield tuple(jax.device_put(a, self.sharding) for a in chunk)

  def _host_chunks(self):
    dtype = self.dtype
    n = self.features.shape[0]
    for start in range(0, n, self.chunk_size):
      stop = min(start + self.chunk_size, n)
      pad = self.chunk_size - (stop - start)
      f = np.asarray(self.features[start:stop], dtype)
      if not np.isfinite(f).all():
        row = start + int(np.argwhere(~np.isfinite(f))[0, 0])
        raise UserError(f"features has NaN/inf values (first in row {row})")
      y = self.labels[start:stop]
      weights = np.r_[np.ones(stop - start, dtype), np.zeros(pad, dtype)]
      arrays = [np.pad(f, ((0, pad), (0, 0))), weights, np.pad(y, (0, pad))]
      if self.probs is not None:
        p = np.asarray(self.probs[start:stop], dtype)
        if (p < 0).any() or (np.abs(p.sum(axis=1) - 1) > 1e-3).any():
          raise UserError(f"probs rows {start}..{stop - 1} are not probabilities (negative "
                          "entries or rows not summing to 1); pass softmax outputs")
        arrays.append(np.pad(p, ((0, pad), (0, 0))))
      else:
        arrays.append(np.zeros((self.chunk_size, 1), dtype))
      yield tuple(arrays)


@functools.partial(jax.jit, static_argnames=("num_classes",), donate_argnums=(0,))
def _pass1(stats, shift, f, weights, labels, probs, *, num_classes):
  x = (f - shift) * weights[:, None]  # padding rows become zero
  out = dict(stats)
  out["counts"] = stats["counts"] + jax.ops.segment_sum(weights, labels, num_classes)
  out["sums"] = stats["sums"] + jax.ops.segment_sum(x, labels, num_classes)
  out["gram"] = stats["gram"] + jnp.matmul(x.T, x, precision=_checks.HIGHEST)
  if "joint" in stats:
    p = probs * weights[:, None]
    out["joint"] = stats["joint"] + source.leep_joint(p, labels, num_classes=num_classes)
    hard = jax.nn.one_hot(jnp.argmax(probs, axis=1), probs.shape[1], dtype=p.dtype)
    out["hard"] = stats["hard"] + jax.ops.segment_sum(hard * weights[:, None], labels,
                                                      num_classes)
  return out


@functools.partial(jax.jit, static_argnames=("num_classes", "with_leep"), donate_argnums=(0,))
def _pass2(second, shift, means_s, pca, conditional, f, weights, labels, probs, *, num_classes,
           with_leep):
  deviation = (f - shift) - means_s[labels]
  out = dict(second)
  out["distance"] = second["distance"] + jnp.sum(jnp.linalg.norm(deviation, axis=1) * weights)
  if pca is not None:
    deviation = jnp.matmul(deviation, pca, precision=_checks.HIGHEST)
  out["squares"] = second["squares"] + jax.ops.segment_sum(
      jnp.square(deviation) * weights[:, None], labels, num_classes)
  if with_leep:
    safe = jnp.where(weights[:, None] > 0, probs, 1.0 / probs.shape[1])
    out["log_likelihood"] = second["log_likelihood"] + jnp.sum(
        source.leep_log_likelihood(safe, labels, conditional) * weights)
  return out


def _add_class_grams(grams, chunk, shift):
  """grams[c] += (f - s)^T (f - s) over the chunk's rows of class c (host BLAS, by class)."""
  f, weights, labels = (np.asarray(a) for a in chunk[:3])
  keep = weights > 0
  x, y = f[keep] - np.asarray(shift), labels[keep]
  order = np.argsort(y, kind="stable")
  x, y = x[order], y[order]
  bounds = np.flatnonzero(np.diff(y)) + 1
  for rows, c in zip(np.split(x, bounds), y[np.r_[0, bounds]]):
    grams[c] += rows.T @ rows


@functools.partial(jax.jit, static_argnames=("n", "eps"))
def _transrate(grams, scatter, sums, counts, mean_s, n, eps):
  """TransRate from per-class Grams of the shifted features, re-centred on the global mean."""

  def rate(args):
    gram, s_c, count = args
    centred = (gram - jnp.outer(s_c, mean_s) - jnp.outer(mean_s, s_c)
               + count * jnp.outer(mean_s, mean_s))
    return coding_rate.coding_rate(centred, count, eps=eps)

  rates = jax.lax.map(rate, (grams, sums, counts))
  return coding_rate.coding_rate(scatter, n, eps=eps) - jnp.mean(rates)
