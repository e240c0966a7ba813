"""One training run per workdir: a second is refused with one line naming the first; a lock left
by a run that died is taken over; the other processes of a multi-host job are not refused."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from audiotl_jax.errors import UserError
from audiotl_jax.train import checkpoints
from conftest import REPO
from test_preemption import _pretrain_command


@pytest.mark.timeout(600)
def test_second_run_is_refused_and_a_dead_runs_lock_is_taken_over(prepared, tmp_path):
  workdir = tmp_path / "run"
  slow = dict(total_steps=100000, checkpoint_every=3)
  log = (tmp_path / "first.log").open("w")  # a file: a pipe nobody reads would stall the run
  first = subprocess.Popen(_pretrain_command(prepared["audioset"], workdir, **slow), cwd=REPO,
                           stdout=log, stderr=subprocess.STDOUT)
  try:
    deadline = time.time() + 300
    while not (workdir / "checkpoints").is_dir() or not checkpoints.finished_steps(
        workdir / "checkpoints"):  # training, with a committed checkpoint to resume from
      assert first.poll() is None and time.time() < deadline, (tmp_path / "first.log").read_text()
      time.sleep(0.1)
    config_before = (workdir / "config.json").read_text()

    second = subprocess.run(_pretrain_command(prepared["audioset"], workdir, **slow), cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 2, second.stderr[-3000:]
    errors = [line for line in second.stderr.splitlines() if line.startswith("audiotl: error:")]
    assert len(errors) == 1 and "Traceback" not in second.stderr, second.stderr[-3000:]
    assert f"pid {first.pid}" in errors[0] and str(workdir) in errors[0], errors[0]
    assert first.poll() is None, "the first run must go on"
    assert (workdir / "config.json").read_text() == config_before
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait()
    log.close()
  reached = checkpoints.finished_steps(workdir / "checkpoints")[-1]

  third = subprocess.run(
      _pretrain_command(prepared["audioset"], workdir, **slow, stop_at=reached + 2), cwd=REPO,
      capture_output=True, text=True, timeout=300)
  assert third.returncode == 0, third.stderr[-3000:]
  assert f"resuming from step {reached}" in third.stdout, third.stdout[-2000:]
  assert checkpoints.finished_steps(workdir / "checkpoints")[-1] == reached + 2
  assert not (workdir / ".lock").exists()  # released at the end


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from audiotl_jax.train import lock
    lock.hold(Path(sys.argv[1]))
    print("held", flush=True)
    time.sleep(600)
""")


def test_only_process_0_takes_the_lock(tmp_path, monkeypatch):
  """Process 0 of a job holds the lock; the job's other processes share its workdir."""
  from audiotl_jax.train import lock
  holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(UserError, match=f"pid {holder.pid}"):
      lock.hold(tmp_path)
    monkeypatch.setattr(lock.jax, "process_index", lambda: 1)
    lock.hold(tmp_path)  # not refused
    lock.release(tmp_path)
  finally:
    holder.kill()
    holder.wait()
  monkeypatch.undo()
  lock.hold(tmp_path)  # the holder died: its lock is stale
  lock.release(tmp_path)
  assert not (tmp_path / ".lock").exists()
