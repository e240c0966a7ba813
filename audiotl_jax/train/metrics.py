"""Evaluation metrics and the metrics writer.

Multi-label (AudioSet): mean average precision, macro ROC-AUC and d' = sqrt(2) * Phi^-1(AUC), over
the classes that have both positives and negatives in the split (the others are undefined and
reported as a count, not silently averaged in). Single-label: accuracy. Binary detection: AUROC.
"""
import json
import math
import os
import pathlib
import shutil
import statistics
import tempfile
import time

import numpy as np

from audiotl_jax import fileio


def multilabel(scores: np.ndarray, targets: np.ndarray) -> dict:
  # Imported here: scikit-learn (and the pandas it loads) costs ~0.5 s of every run's start-up,
  # and a single-label fine-tuning never needs it.
  from sklearn import metrics as skm
  targets = (targets > 0.5).astype(np.int32)
  pos = targets.sum(0)
  valid = (pos > 0) & (pos < len(targets))
  if not valid.any():
    return {"mAP": float("nan"), "auc": float("nan"), "dprime": float("nan"), "classes_scored": 0}
  ap = skm.average_precision_score(targets[:, valid], scores[:, valid], average=None)
  auc = skm.roc_auc_score(targets[:, valid], scores[:, valid], average=None)
  mean_auc = float(np.mean(auc))
  return {
      "mAP": float(np.mean(ap)),
      "auc": mean_auc,
      "dprime": dprime(mean_auc),
      "classes_scored": int(valid.sum()),
  }


def dprime(auc: float) -> float:
  return float(math.sqrt(2.0) * statistics.NormalDist().inv_cdf(min(max(auc, 1e-6), 1 - 1e-6)))


def accuracy(logits: np.ndarray, labels: np.ndarray) -> dict:
  return {"accuracy": float(np.mean(np.argmax(logits, -1) == labels))}


def binary_auroc(logits: np.ndarray, labels: np.ndarray) -> dict:
  """Detection: logits (N, 1) or (N, 2); AUROC of the positive class, and the accuracy of the
  decision at logit 0 (one output) or of the argmax (two), which studies report beside it."""
  score = logits[:, -1] if logits.shape[-1] > 1 else logits[:, 0]
  decision = logits.argmax(-1) if logits.shape[-1] > 1 else (score > 0).astype(np.int64)
  accuracy = float(np.mean(decision == labels)) if len(labels) else float("nan")
  if len(np.unique(labels)) < 2:
    return {"auroc": float("nan"), "accuracy": accuracy}
  from sklearn import metrics as skm
  return {"auroc": float(skm.roc_auc_score(labels, score)), "accuracy": accuracy}


def for_task(task: str, logits: np.ndarray, labels: np.ndarray) -> dict:
  if task == "multilabel":
    return multilabel(logits, labels)
  if task == "binary":
    return binary_auroc(logits, labels)
  return accuracy(logits, labels)


MAIN_METRIC = {"multilabel": "mAP", "multiclass": "accuracy", "binary": "auroc"}


class MetricWriter:
  """Appends metrics to `workdir/metrics.jsonl` and TensorBoard event files.

  On resume the JSONL is kept and new lines are appended; a reader takes the last value per step.
  On object storage, which cannot append, the JSONL is written whole at each log step (a few
  hundred lines), and the TensorBoard events go to a local temporary folder copied into
  `workdir/tensorboard/` at `close` (tensorboardX writes to gs:// only with its own GCS
  support), so a run that dies leaves its JSONL but not its newest events there.
  """

  def __init__(self, workdir, *, enabled: bool = True):
    self.enabled = enabled
    workdir = fileio.path(workdir)
    self.path = workdir / "metrics.jsonl"
    self._tb, self._tb_local, self._lines = None, None, None
    if enabled and not fileio.is_local(workdir):
      self._lines = self.path.read_text() if self.path.exists() else ""
    if enabled:
      from tensorboardX import SummaryWriter  # Imported here: only the writing process needs it.
      tb_dir = workdir / "tensorboard"
      if not fileio.is_local(workdir):
        self._tb_local, self._tb_remote = tempfile.mkdtemp(prefix="audiotl-tb-"), tb_dir
        tb_dir = self._tb_local
      self._tb = SummaryWriter(str(tb_dir))

  def write(self, step: int, values: dict) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), "time": time.time(),
           **{k: (float(v) if np.ndim(v) == 0 else np.asarray(v).tolist()) for k, v in values.items()}}
    if self._lines is None:
      with self.path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    else:
      self._lines += json.dumps(row) + "\n"
      self.path.write_text(self._lines)
    for k, v in values.items():
      if np.ndim(v) == 0 and math.isfinite(float(v)):
        self._tb.add_scalar(k, float(v), int(step))

  def close(self):
    """Flushes and closes; safe to call twice (the loop's exit path closes it too)."""
    if self._tb is not None:
      tb, self._tb = self._tb, None
      tb.close()
    if self._tb_local is not None:
      for root, _, names in os.walk(self._tb_local):
        dest = self._tb_remote / os.path.relpath(root, self._tb_local)
        dest.mkdir(parents=True, exist_ok=True)
        for name in names:
          (dest / name).write_bytes(pathlib.Path(root, name).read_bytes())
      shutil.rmtree(self._tb_local, ignore_errors=True)
      self._tb_local = None


def read_jsonl(path) -> list[dict]:
  path = fileio.path(path)
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
