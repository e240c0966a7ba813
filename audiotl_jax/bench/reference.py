"""Float64 numpy versions of the scores, written step by step from the published algorithms.

They are the yardstick for the jitted scores (tests check agreement to 1e-6 relative under x64)
and the baseline of `audiotl bench --only scores` (`official_logme` is thuml/LogME's
`LogME.fit` algorithm, per-class Python loop included, so its time is the official code's).
Slow by design: loops mirror the papers' notation, not performance.
"""
import numpy as np


def _classes(labels):
  classes = np.unique(labels)
  return classes, [np.asarray(labels) == c for c in classes]


def _fixed_point(sigma, x2, res_x2, n):
  """thuml/LogME's `_fit_fixed_point` iteration for one target, in its notation: yields
  (alpha, beta, t, m2, res2) after each update, stopping once alpha / beta moved by <= 1e-3
  relative, after at most 11 updates."""
  alpha, beta = 1.0, 1.0
  for _ in range(11):
    t = alpha / beta
    gamma = (sigma / (sigma + t)).sum()
    m2 = (sigma * x2 / ((t + sigma) ** 2)).sum()
    res2 = (x2 / ((1 + sigma / t) ** 2)).sum() + res_x2
    alpha = gamma / (m2 + 1e-5)
    beta = (n - gamma) / (res2 + 1e-5)
    yield alpha, beta, t, m2, res2
    if abs(alpha / beta - t) / t <= 1e-3:
      return


def official_logme(features, labels, *, targets=None, pad_log_det: bool = False) -> float:
  """thuml/LogME `LogME.fit` (`_fit_fixed_point`), float64, transcribed from LogME.py.

  Both branches of the official code: for N > D its `truncated_svd` (SVD of F^T F, singular
  values sqrt(s) > 1e-10 kept, U = F V / S), for N <= D `np.linalg.svd(F, full_matrices=False)`,
  whose min(N, D) = N singular values are those of F F^T (the dual form). Log det sums
  log(alpha + beta sigma) over those k singular values only, as the official code does.
  Classification one-vs-rest from `labels` (the official code loops over 0..max(labels); here
  over the distinct labels, the same for contiguous labels), or regression over the columns of
  `targets`. With `pad_log_det`, log det also counts the D - k missing eigenvalues as alpha
  (thuml/LogME#23, PR #24): the exact evidence of `logme_exact`; identical when k = D.
  """
  f = np.asarray(features, np.float64)
  n, d = f.shape
  if n > d:  # the official `truncated_svd`
    _, s, vh = np.linalg.svd(f.T @ f)
    s = np.sqrt(s)
    k = int(np.sum(s > 1e-10))
    s, vh = s[:k], vh[:k]
    u = (f @ vh.T) / s
  else:
    u, s, vh = np.linalg.svd(f, full_matrices=False)
  s = s.reshape(-1, 1)
  sigma = s ** 2
  if targets is None:
    ys = [(labels == c).astype(np.float64) for c in np.unique(labels)]
  else:
    targets = np.asarray(targets, np.float64).reshape(n, -1)
    ys = [targets[:, i] for i in range(targets.shape[1])]
  evidences = []
  for y in ys:
    y = y.reshape(-1, 1)
    x = u.T @ y
    x2 = x ** 2
    res_x2 = (y ** 2).sum() - x2.sum()
    # The evidence at every step, as the official fit computes it (its cost is the baseline's).
    for alpha, beta, t, m2, res2 in _fixed_point(sigma, x2, res_x2, n):
      log_det = np.sum(np.log(alpha + beta * sigma))
      if pad_log_det:
        log_det += (d - sigma.shape[0]) * np.log(alpha)
      evidence = (d / 2.0 * np.log(alpha) + n / 2.0 * np.log(beta) - 0.5 * log_det
                  - beta / 2.0 * res2 - alpha / 2.0 * m2 - n / 2.0 * np.log(2 * np.pi)) / n
    evidences.append(evidence)
    # The official fit computes each class's weights m; unused here, but its cost belongs in the
    # baseline's time.
    vh.T @ (1.0 / (t + sigma) * s * x)
  return float(np.mean(evidences))


def nc_score(features, labels) -> float:
  f = np.asarray(features, np.float64)
  classes, masks = _classes(labels)
  means = np.stack([f[m].mean(axis=0) for m in masks])
  row = np.searchsorted(classes, labels)
  within = np.linalg.norm(f - means[row], axis=1).mean()
  between = [np.linalg.norm(means[i] - means[j])
             for i in range(len(classes)) for j in range(i + 1, len(classes))]
  return float(within / np.mean(between))


def leep(probs, labels) -> float:
  p = np.asarray(probs, np.float64)
  classes, masks = _classes(labels)
  joint = np.stack([p[m].sum(axis=0) for m in masks]) / p.shape[0]
  conditional = joint / joint.sum(axis=0, keepdims=True)
  row = np.searchsorted(classes, labels)
  return float(np.mean(np.log(np.sum(p * conditional[row], axis=1))))


def nce(source_labels, labels) -> float:
  pairs = {}
  for z, y in zip(np.asarray(source_labels).tolist(), np.asarray(labels).tolist()):
    pairs[(y, z)] = pairs.get((y, z), 0) + 1
  n = len(labels)
  marginal = {}
  for (y, z), count in pairs.items():
    marginal[z] = marginal.get(z, 0) + count
  return float(sum(c / n * np.log(c / marginal[z]) for (y, z), c in pairs.items()))


def hscore(features, labels) -> float:
  f = np.asarray(features, np.float64)
  cov_f = np.cov(f, rowvar=False)
  g = np.zeros_like(f)
  for m in _classes(labels)[1]:
    g[m] = f[m].mean(axis=0)
  cov_g = np.cov(g, rowvar=False)
  return float(np.trace(np.linalg.pinv(cov_f, rcond=1e-15) @ cov_g))


def pca(features, dim: int) -> np.ndarray:
  f = np.asarray(features, np.float64)
  centered = f - f.mean(axis=0)
  _, _, vt = np.linalg.svd(centered, full_matrices=False)
  return centered @ vt[:dim].T


def gbc(features, labels, *, covariance: str = "diagonal", pca_dim=None) -> float:
  f = np.asarray(features, np.float64)
  if pca_dim is not None:
    f = pca(f, pca_dim)
  d = f.shape[1]
  stats = []
  for m in _classes(labels)[1]:
    var = f[m].var(axis=0)
    stats.append((f[m].mean(axis=0), np.full(d, var.mean()) if covariance == "spherical"
                  else var))
  total = 0.0
  for i, (mu1, s1) in enumerate(stats):
    for j, (mu2, s2) in enumerate(stats):
      if i == j:
        continue
      s = (s1 + s2) / 2
      distance = (np.sum((mu1 - mu2) ** 2 / s) / 8
                  + 0.5 * (np.sum(np.log(s)) - 0.5 * np.sum(np.log(s1)) - 0.5 * np.sum(np.log(s2))))
      total += np.exp(-distance)
  return float(-total)


def transrate(features, labels, *, eps: float = 1e-4) -> float:
  z = np.asarray(features, np.float64)
  z = z - z.mean(axis=0, keepdims=True)

  def rate(x):
    n, d = x.shape
    return 0.5 * np.linalg.slogdet(np.eye(d) + x.T @ x / (n * eps))[1]

  masks = _classes(labels)[1]
  return float(rate(z) - sum(rate(z[m]) for m in masks) / len(masks))


def logme_heldout(train_features, train_labels, val_features, val_labels) -> float:
  """The validation-aware LogME with explicit D x D matrices (alpha, beta from the fixed point)."""
  f = np.asarray(train_features, np.float64)
  fv = np.asarray(val_features, np.float64)
  n, d = f.shape
  g = f.T @ f
  sigma, v = np.linalg.eigh(g)
  sigma = np.clip(sigma, 0, None)
  densities = []
  for c in np.unique(train_labels):
    y = (train_labels == c).astype(np.float64)
    x2 = np.divide((v.T @ f.T @ y) ** 2, sigma, out=np.zeros(d), where=sigma > 1e-20)
    res_x2 = y @ y - x2.sum()
    *_, (alpha, beta, _, _, _) = _fixed_point(sigma, x2, res_x2, n)
    a = alpha * np.eye(d) + beta * g
    m = beta * np.linalg.solve(a, f.T @ y)
    var = 1 / beta + np.einsum("md,md->m", fv, np.linalg.solve(a, fv.T).T)
    yv = (val_labels == c).astype(np.float64)
    densities.append(-0.5 * (np.log(2 * np.pi * var) + (yv - fv @ m) ** 2 / var))
  return float(np.mean(densities))
