"""Compiling the train step ahead of time, beside the rest of a run's start-up.

A run's first seconds go to restoring a checkpoint or measuring the feature statistics, and to
tracing, lowering and compiling the step (or reading it from the persistent compilation cache).
The two need not wait for each other: `Ahead` does `.lower(...).compile()` in a thread, from
shapes alone, while the main thread goes on; `get()` hands over the compiled step.
"""
import threading

import jax


class Ahead:
  """`jitted.lower(*args).compile()` in a background thread; `args` may be arrays or
  `jax.ShapeDtypeStruct`s. `get()` waits for it and returns the compiled function, or raises
  what compiling raised (the same error the first call would have given)."""

  def __init__(self, jitted, *args):
    self._result, self._error = None, None
    self._thread = threading.Thread(target=self._compile, args=(jitted, args), daemon=True,
                                    name="compile-ahead")
    self._thread.start()

  def _compile(self, jitted, args):
    try:
      self._result = jitted.lower(*args).compile()
    except BaseException as e:  # pylint: disable=broad-except  (re-raised by get)
      self._error = e

  def wait(self) -> None:
    self._thread.join()

  def get(self):
    self.wait()
    if self._error is not None:
      raise self._error
    return self._result


def shapes(spec: dict) -> dict:
  """{key: (shape, dtype)} -> {key: jax.ShapeDtypeStruct}."""
  return {k: jax.ShapeDtypeStruct(shape, dtype) for k, (shape, dtype) in spec.items()}
