"""Evaluation metrics and the metrics writer.

Multi-label (AudioSet): mean average precision, macro ROC-AUC and d' = sqrt(2) * Phi^-1(AUC), over
the classes that have both positives and negatives in the split (the others are undefined and
reported as a count, not silently averaged in). Single-label: accuracy. Binary detection: AUROC.
"""
import json
import math
import time
from pathlib import Path

import numpy as np
from scipy import stats
from sklearn import metrics as skm


def multilabel(scores: np.ndarray, targets: np.ndarray) -> dict:
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
  return float(math.sqrt(2.0) * stats.norm.ppf(min(max(auc, 1e-6), 1 - 1e-6)))


def accuracy(logits: np.ndarray, labels: np.ndarray) -> dict:
  return {"accuracy": float(np.mean(np.argmax(logits, -1) == labels))}


def binary_auroc(logits: np.ndarray, labels: np.ndarray) -> dict:
  """Detection: logits (N, 1) or (N, 2); AUROC of the positive class."""
  score = logits[:, -1] if logits.shape[-1] > 1 else logits[:, 0]
  if len(np.unique(labels)) < 2:
    return {"auroc": float("nan")}
  return {"auroc": float(skm.roc_auc_score(labels, score))}


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
  """

  def __init__(self, workdir: Path, *, enabled: bool = True):
    self.enabled = enabled
    self.path = Path(workdir) / "metrics.jsonl"
    self._tb = None
    if enabled:
      from tensorboardX import SummaryWriter  # Imported here: only the writing process needs it.
      self._tb = SummaryWriter(str(Path(workdir) / "tensorboard"))

  def write(self, step: int, values: dict) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), "time": time.time(),
           **{k: (float(v) if np.ndim(v) == 0 else np.asarray(v).tolist()) for k, v in values.items()}}
    with self.path.open("a") as f:
      f.write(json.dumps(row) + "\n")
    for k, v in values.items():
      if np.ndim(v) == 0 and math.isfinite(float(v)):
        self._tb.add_scalar(k, float(v), int(step))

  def close(self):
    if self._tb is not None:
      self._tb.close()


def read_jsonl(path: Path) -> list[dict]:
  path = Path(path)
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
