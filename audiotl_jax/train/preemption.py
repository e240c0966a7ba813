"""Preemption notices: SIGTERM, which SLURM (`--requeue`, a time limit) and TPU maintenance send
some seconds before they kill a job.

While the loop runs, a notice only sets a flag; the loop looks at it between steps, saves the
step it reached, waits for the save and raises `Preempted` (exit code 143, as if killed by
SIGTERM, so schedulers see a preemption, not a failure). Running the same command again resumes
from that step. A multi-process job must stop every process at the same step: there JAX's
preemption service (started by `jax.distributed.initialize`) receives the signal and agrees on
the step with the other processes, and the loop asks it instead.
"""
import signal
import threading

import jax
from jax.experimental import multihost_utils

EXIT_CODE = 128 + signal.SIGTERM


class Preempted(SystemExit):
  """The run saved its state and stopped on a preemption notice; run it again to resume."""

  def __init__(self, step: int, message: str):
    super().__init__(EXIT_CODE)
    self.step, self.message = step, message

  def __str__(self):
    return self.message


class Notice:
  """Whether a preemption notice came; `restore()` puts back the handler there was before."""

  def __init__(self):
    self.received = False
    self._installed, self._previous = False, None
    self._jax_service = (jax.distributed.is_initialized()
                         and jax.config.jax_enable_preemption_service)
    # Signal handlers can only be set from the main thread; elsewhere SIGTERM keeps its effect.
    if not self._jax_service and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._note)
      self._installed = True

  def _note(self, signum, frame):
    del signum, frame
    self.received = True

  def reached(self, step: int) -> bool:
    """True at the step boundary where the run should save and stop (every process agrees)."""
    if self._jax_service:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.received

  def restore(self) -> None:
    if self._installed:
      # None: the handler was set outside Python (unknown to it); the default is the best guess.
      signal.signal(signal.SIGTERM,
                    signal.SIG_DFL if self._previous is None else self._previous)
      self._installed = False
