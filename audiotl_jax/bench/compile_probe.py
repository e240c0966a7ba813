"""`python -m audiotl_jax.bench.compile_probe <audiotl arguments>`: runs one `audiotl` command
(the program as `python -m audiotl_jax` runs it) and prints how much of its wall time compiling
held up the main thread (`bench/compile.py` runs it).

The main thread is the critical path: the train step compiles in a thread (`aot.Ahead`) while the
main thread works on, and only the main thread's wait for it holds the run up. Counted, all on
the main thread: JAX's trace, lowering and compile events outside `aot.compile`; the whole time
inside `aot.compile` (trace, key, read from the program cache or compile, load); the wait in
`aot.Ahead.get`. Also printed: every thread's compile events, for the work done off the path.
"""
import collections
import json
import runpy
import sys
import threading
import time

_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
           "/jax/core/compile/jaxpr_to_mlir_module_duration",
           "/jax/core/compile/backend_compile_duration")


def main(argv) -> int:
  from jax import monitoring
  from audiotl_jax.train import aot
  main_thread = threading.main_thread()
  inside = threading.local()
  spent = collections.Counter()  # main-thread seconds by kind; "thread:<name>" for the others

  def on_event(event, duration, **_):
    if event not in _EVENTS:
      return
    if threading.current_thread() is not main_thread:
      spent[f"thread:{threading.current_thread().name}"] += duration
    elif not getattr(inside, "compiling", False):
      spent["events"] += duration

  def timed(key, fn):
    def wrapper(*args, **kwargs):
      if threading.current_thread() is not main_thread:
        return fn(*args, **kwargs)
      inside.compiling, t = True, time.perf_counter()
      try:
        return fn(*args, **kwargs)
      finally:
        spent[key] += time.perf_counter() - t
        inside.compiling = False
    return wrapper

  monitoring.register_event_duration_secs_listener(on_event)
  aot.compile = timed("program_cache", aot.compile)
  aot.Ahead.get = timed("ahead_wait", aot.Ahead.get)
  sys.argv = ["audiotl", *argv]
  t = time.perf_counter()
  try:
    runpy.run_module("audiotl_jax", run_name="__main__", alter_sys=True)
    rc = 0
  except SystemExit as e:
    rc = e.code if isinstance(e.code, int) else 1
  wall = time.perf_counter() - t
  critical = spent["events"] + spent["program_cache"] + spent["ahead_wait"]
  print("COMPILE-PROBE " + json.dumps({
      "rc": rc, "wall_s": wall, "critical_compile_s": critical, "share": critical / wall,
      "main_events_s": spent["events"], "program_cache_s": spent["program_cache"],
      "ahead_wait_s": spent["ahead_wait"],
      "other_threads_s": sum(v for k, v in spent.items() if k.startswith("thread:"))}),
        flush=True)
  return rc


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
