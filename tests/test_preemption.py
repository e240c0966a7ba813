"""A run stopped from outside keeps what it saved: SIGTERM (preemption), errors, divergence.

SIGTERM is what SLURM (`--requeue`) and TPU maintenance send before they kill a job. The run
saves the step it reached, waits for the save, and exits with code 143; the same command then
resumes as if nothing had happened. An exception or divergence right after a save must not throw
that save away.
"""
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from audiotl_jax.train import checkpoints
from conftest import REPO, tiny_pretrain_config

TOTAL = 100


def _pretrain_command(data_dir, workdir, **overrides):
  """`audiotl pretrain` with the settings of `tiny_pretrain_config` (plus `overrides`)."""
  settings = {"data.dir": data_dir, "data.subset": "Human sounds", "batch_size": 8,
              "total_steps": 4, "log_every": 1, "eval_every": 2, "checkpoint_every": 2,
              "frontend.n_mels": 32, "progress": False, **overrides}
  return [sys.executable, "-m", "audiotl_jax", "pretrain", "--config",
          "configs/pretrain.py:model=cnn:tiny,runlocal", "--workdir", str(workdir),
          *(f"--config.{k}={v}" for k, v in settings.items())]


def _train_steps(workdir: Path) -> list[int]:
  """The steps logged so far (read while the run appends: the last line may be half written)."""
  path, steps = workdir / "metrics.jsonl", []
  for line in path.read_text().splitlines() if path.exists() else []:
    try:
      row = json.loads(line)
    except ValueError:
      continue
    if "train_loss" in row:
      steps.append(row["step"])
  return steps


def _committed(step_dir: Path) -> bool:
  """Orbax finished the step: its folder has its final name and every item is there."""
  return step_dir.is_dir() and all((step_dir / item).is_dir()
                                   for item in ("model", "train", "data", "metadata"))


@pytest.mark.timeout(600)
def test_sigterm_saves_the_step_reached_and_the_rerun_matches(prepared, tmp_path):
  command = dict(total_steps=TOTAL, eval_every=1000, checkpoint_every=1000)  # no periodic save
  whole = tmp_path / "whole"
  from audiotl_jax.stages import pretrain
  pretrain.run(tiny_pretrain_config(prepared["audioset"], **command), whole)

  parts = tmp_path / "parts"
  argv = _pretrain_command(prepared["audioset"], parts, **command)
  proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  # A random moment in the first half of training: after a random logged step, plus a little.
  target, delay = random.randint(1, TOTAL // 2), random.uniform(0.0, 0.05)
  print(f"SIGTERM {delay:.3f} s after step {target} is logged")
  deadline = time.time() + 300
  while max(_train_steps(parts), default=0) < target:
    assert proc.poll() is None and time.time() < deadline, proc.communicate()
    time.sleep(0.005)
  time.sleep(delay)
  proc.send_signal(signal.SIGTERM)
  sent = time.time()
  out, err = proc.communicate(timeout=120)
  took = time.time() - sent
  assert proc.returncode == 143, (proc.returncode, err[-3000:])
  assert took < 30, f"took {took:.1f} s to stop"
  reached = max(_train_steps(parts))
  assert target <= reached < TOTAL
  assert f"step {reached}" in err.strip().splitlines()[-1], err[-2000:]
  assert checkpoints.finished_steps(parts / "checkpoints") == [reached]
  assert _committed(parts / "checkpoints" / str(reached))
  assert not (parts / "results.json").exists()

  again = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert f"resuming from step {reached}" in again.stdout
  mw, _, _ = checkpoints.load_model(whole / "checkpoints" / str(TOTAL))
  mp, _, _ = checkpoints.load_model(parts / "checkpoints" / str(TOTAL))
  jax.tree.map(np.testing.assert_array_equal, mp, mw)  # bit-exact: same steps, same batches


def test_sigterm_in_process_saves_and_restores_the_old_handler(prepared, tmp_path, monkeypatch):
  """The handler lives only while the loop runs; a notice during it stops the run at the next
  step boundary (here step 3, between periodic saves at 2 and 4)."""
  from audiotl_jax.stages import pretrain
  from audiotl_jax.train import metrics as metrics_lib
  calls = []

  def theirs(signum, frame):  # what the embedding program had installed
    calls.append(signum)

  write = metrics_lib.MetricWriter.write

  def write_then_notice(self, step, values):
    write(self, step, values)
    if step == 3 and "train_loss" in values:
      os.kill(os.getpid(), signal.SIGTERM)

  monkeypatch.setattr(metrics_lib.MetricWriter, "write", write_then_notice)
  previous = signal.signal(signal.SIGTERM, theirs)
  try:
    config = tiny_pretrain_config(prepared["audioset"], total_steps=6)
    with pytest.raises(SystemExit) as stopped:
      pretrain.run(config, tmp_path)
    assert stopped.value.code == 143
    assert signal.getsignal(signal.SIGTERM) is theirs and calls == []
  finally:
    signal.signal(signal.SIGTERM, previous)
  ckpt = tmp_path / "checkpoints"
  assert checkpoints.finished_steps(ckpt) == [2, 3] and _committed(ckpt / "3")
  monkeypatch.undo()
  results = pretrain.run(config, tmp_path)
  assert results["total_steps"] == 6 and checkpoints.finished_steps(ckpt)[-1] == 6


@pytest.fixture
def fail_at_step_3(monkeypatch):
  """The train step fails at step 3, right after the save at step 2: by diverging (the flag the
  step reports) or by raising (a lost device, a bug)."""
  from audiotl_jax.train import aot
  get = aot.Ahead.get
  how = {}

  def patched(self):
    step = get(self)
    how["gets"] = how.get("gets", 0) + 1
    if how["gets"] % 2 == 0:  # the loop gets its train step, then its evaluation's predict
      return step

    def failing(state, batch, norm):
      state, m = step(state, batch, norm)
      if int(state.step) == 3:
        if how["kind"] == "error":
          raise RuntimeError("device lost at step 3")
        m = {**m, "finite": np.asarray(False)}
      return state, m
    return failing

  monkeypatch.setattr(aot.Ahead, "get", patched)
  return how


@pytest.mark.parametrize("kind", ["diverged", "error"])
def test_a_failure_right_after_a_save_keeps_that_save(prepared, tmp_path, fail_at_step_3, kind):
  from audiotl_jax.stages import pretrain
  from audiotl_jax.train import step as step_lib
  fail_at_step_3["kind"] = kind
  config = tiny_pretrain_config(prepared["audioset"], total_steps=6)
  expected = step_lib.TrainingDiverged if kind == "diverged" else RuntimeError
  with pytest.raises(expected) as raised:
    pretrain.run(config, tmp_path)
  ckpt = tmp_path / "checkpoints"
  # Checked at once: the save must have been committed before the error left `train`.
  assert _committed(ckpt / "2"), sorted(p.name for p in ckpt.iterdir())
  assert checkpoints.finished_steps(ckpt) == [2]
  if kind == "diverged":
    named = re.search(r"Last good checkpoint: step (\d+)", str(raised.value))
    assert named and _committed(ckpt / named.group(1)), str(raised.value)
  loaded, meta, _ = checkpoints.load_model(ckpt / "2")
  assert meta["stage"] == "pretrain" and loaded["params"]
