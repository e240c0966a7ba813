"""Transferability scores: rank pre-trained models by how well their features suit a target task.

Each score has two layers:
  * a host-side wrapper (`nc_score`, `logme`, `leep`, `nce`, `hscore`, `gbc`, `transrate`) that
    refuses degenerate input with `UserError` and maps arbitrary integer labels to 0..C-1, and
  * jitted cores (`*_core`, `*_from_moments`) that take contiguous labels and a static class
    count, or the sufficient statistics, for callers that already hold clean arrays (inside a
    jitted evaluation, or `streaming.py` for N larger than memory).

Arithmetic is in float64 when jax x64 is enabled (`jax.config.update('jax_enable_x64', True)`
or `with jax.enable_x64(True):`), else float32; each docstring states its float32 error. Scores
come back as 0-d jax arrays. `reference.py` holds float64 numpy versions (the official LogME
algorithm among them) for tests and benchmarks.

Modules: `nc` (NC score), `evidence` (LogME, classification and regression), `source` (LEEP
and NCE, which read the source head), `h_score`, `bhattacharyya` (GBC), `coding_rate`
(TransRate), `streaming` (chunked, sharded sufficient statistics), `reference`, `benchmark`
(`audiotl bench --only scores`). Beside the scores, and not in `SCORES`: `probe` (a linear probe
trained on one split, evaluated on another), `cka` (linear CKA between two representations of
the same clips, full and minibatch) and `params` (cosine distance between states' parameters).

`SCORES` maps each name to (function(x, labels), higher_is_better); `INPUTS` says what x is.
`logme` is thuml/LogME's value, also for D > N where the official code leaves D - N
eigenvalues out of log det; `logme_exact` is the exact evidence (the same number for N >= D).
`logme_regression` / `logme_regression_exact` (multi-label or continuous targets) and
`logme_heldout` (training plus validation data) take other arguments and are called by name.
"""
import numpy as np

from audiotl_jax.errors import unknown_name
from audiotl_jax.scores.bhattacharyya import PCA_DIM
from audiotl_jax.scores.bhattacharyya import gbc
from audiotl_jax.scores.h_score import hscore
from audiotl_jax.scores.h_score import hscore_core
from audiotl_jax.scores.evidence import logme
from audiotl_jax.scores.evidence import logme_core
from audiotl_jax.scores.evidence import logme_exact
from audiotl_jax.scores.evidence import logme_from_moments
from audiotl_jax.scores.evidence import logme_heldout
from audiotl_jax.scores.evidence import logme_regression
from audiotl_jax.scores.evidence import logme_regression_core
from audiotl_jax.scores.evidence import logme_regression_exact
from audiotl_jax.scores.nc import nc_score
from audiotl_jax.scores.nc import nc_score_core
from audiotl_jax.scores.source import leep
from audiotl_jax.scores.source import leep_core
from audiotl_jax.scores.source import nce
from audiotl_jax.scores.coding_rate import transrate
from audiotl_jax.scores.cka import linear_cka
from audiotl_jax.scores.cka import minibatch_cka
from audiotl_jax.scores.probe import linear_probe


def gbc_diagonal(features, labels):
  """`gbc` as the paper's pipeline runs it: diagonal Gaussians after PCA to 64 dimensions.

  With D <= 64 the PCA keeps every dimension but still rotates to the principal axes, which is
  what makes diagonal Gaussians usable on ReLU features whose units are silent for some classes
  (zero variance within a class on the raw axes).
  """
  return gbc(features, labels, covariance="diagonal", pca_dim=pca_dim_for(np.shape(features)))


def gbc_spherical(features, labels):
  """`gbc` with spherical Gaussians after PCA to 64 dimensions (as `gbc_diagonal`)."""
  return gbc(features, labels, covariance="spherical", pca_dim=pca_dim_for(np.shape(features)))


def pca_dim_for(shape) -> int:
  """min(64, N, D): the registry's GBC PCA size for (N, D) features."""
  return min(PCA_DIM, *shape)


# name -> (score function, higher_is_better).
SCORES = {
    "nc_score": (nc_score, False),
    "logme": (logme, True),
    # The exact evidence; differs from `logme` (the official value) only when D > N.
    "logme_exact": (logme_exact, True),
    "leep": (leep, True),
    "nce": (nce, True),
    "hscore": (hscore, True),
    "gbc": (gbc_diagonal, True),
    "gbc_spherical": (gbc_spherical, True),
    "transrate": (transrate, True),
}

# What each score reads besides the target labels: the embedding, the source head's softmax
# probabilities, or the source head's hard predictions (argmax).
INPUTS = {
    "nc_score": "features", "logme": "features", "logme_exact": "features",
    "hscore": "features", "gbc": "features",
    "gbc_spherical": "features", "transrate": "features", "leep": "probs",
    "nce": "source_labels",
}


def get_score(name: str):
  """(score function, higher_is_better) for a name in `SCORES`."""
  if name not in SCORES:
    raise unknown_name("score", name, SCORES)
  return SCORES[name]
