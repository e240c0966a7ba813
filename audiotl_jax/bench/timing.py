"""How every bench measures: wall-clock time, peak host memory, and the real train step.

Timing is `time.perf_counter` around calls that block until their result is ready (the caller's
`fn` fetches it, e.g. `block_until_ready`), so asynchronous dispatch is not mistaken for speed.
Memory is the peak of the process's anonymous resident memory (`RssAnon`, sampled every 10 ms)
above its level on entry: it counts host arrays, XLA's CPU buffers and temporaries, but not the
page cache of a memory-mapped file.
"""
import contextlib
import statistics
import threading
import time
from typing import NamedTuple

import numpy as np

from audiotl_jax import models


class Stopwatch:
  """Context manager: `.seconds` is the wall-clock time spent inside the block."""

  def __enter__(self):
    self._start = time.perf_counter()
    return self

  def __exit__(self, *exc):
    self.seconds = time.perf_counter() - self._start


def _rss_anon() -> int:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("RssAnon:"):
        return int(line.split()[1]) * 1024
  return 0


class PeakMemory:
  """Context manager: `.peak` is the peak RssAnon above the entry level, in bytes."""

  def __enter__(self):
    self.base = self.peak_abs = _rss_anon()
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._sample, daemon=True)
    self._thread.start()
    return self

  def _sample(self):
    while not self._stop.wait(0.01):
      self.peak_abs = max(self.peak_abs, _rss_anon())

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak_abs = max(self.peak_abs, _rss_anon())
    self.peak = self.peak_abs - self.base


class Measurement(NamedTuple):
  times: list[float]  # seconds of each call
  peak_bytes: int  # the largest PeakMemory of the calls; 0 unless measured

  @property
  def median(self) -> float:
    return statistics.median(self.times)

  @property
  def best(self) -> float:
    return min(self.times)


def measure(fn, repeats: int, *, memory: bool = False) -> Measurement:
  """Times `repeats` calls of `fn` (warm it up first: compilation is not throughput). With
  `memory`, each call also runs under PeakMemory; the clock starts inside it, so sampling
  start-up is never timed."""
  times, peak = [], 0
  for _ in range(repeats):
    with (PeakMemory() if memory else contextlib.nullcontext()) as mem, Stopwatch() as clock:
      fn()
    times.append(clock.seconds)
    if memory:
      peak = max(peak, mem.peak)
  return Measurement(times, peak)


def fit_batch(batch: int, mesh) -> int:
  """`batch` rounded down to a multiple of the mesh's devices, at least one example each."""
  n = mesh.devices.size
  return max(batch, n) // n * n


def random_batch(batch: int, samples: int) -> dict:
  """A train-step batch of int16 noise clips and sparse AudioSet (527-class) multi-hot labels."""
  rng = np.random.default_rng(0)
  return {"audio": rng.integers(-8000, 8000, (batch, samples)).astype(np.int16),
          "label": (rng.random((batch, 527)) < 0.02).astype(np.float32)}


def time_train_step(model, fc, norm, data, mesh, defaults, *, frames: int,
                    repeats: int) -> tuple[float, float, int]:
  """The real pre-training step for `model` (featurizer, augmentation, BCE, the configured
  optimizer), compiled once, then timed: (compile seconds, median step seconds, parameters).
  Shared by every train-step benchmark so they all time the same thing."""
  from audiotl_jax.train import mesh as mesh_lib, state as state_lib
  from audiotl_jax.features import featurizer
  from audiotl_jax.train import step as steps
  tx = state_lib.make_optimizer(defaults.optim, total_steps=1000)
  state, shardings = state_lib.create(model, tx, mesh, frames=frames, n_mels=fc.n_mels, seed=0)
  num_params = models.count_params(state.params)
  step = steps.jit_train_step(steps.make_train_step(
      model, featurizer.make_featurizer(fc, norm), tx, loss_fn=steps.bce_loss,
      augment=defaults.augment, num_classes=527, target="multihot", mesh=mesh), shardings, mesh)
  g = mesh_lib.to_global(data, mesh)
  holder = {"state": state}
  del state  # The holder owns it: each step donates and replaces it.
  norm_arg = steps.norm_on_mesh(norm, mesh)

  def run():
    holder["state"], m = step(holder["state"], g, norm_arg)
    m["loss"].block_until_ready()

  with Stopwatch() as compile_clock:
    run()
  sec = measure(run, repeats).median
  holder.clear()  # Free the state before the caller builds the next model.
  return compile_clock.seconds, sec, num_params
