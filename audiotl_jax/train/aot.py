"""Compiling a run's programs: ahead of time, beside the rest of its start-up, and kept on disk.

XLA's persistent compilation cache (turned on by the CLI) saves the compile, but a new process
still traces and lowers every program before it can look the compiled one up, and lowering is
the larger part for a warm run: 0.1 s for the init of a tiny CNN, whose parameter draws lower
threefry again and again. `compile` keys the compiled executable on the traced program itself
(the jaxpr as printed, with every parameter of every equation, its constants, the shardings and
donation) and the machine (jax, jaxlib and backend versions, devices, jax config, XLA flags, CPU
features), so a hit skips lowering and compiling. Tracing stays: it is cheap, and it is what
makes the key safe. A different program, however small the difference, prints differently and
misses; a function-valued parameter prints with its address, so such a program always misses.

`Ahead` does the same in a thread, from shapes alone, while the main thread restores a checkpoint
or measures the feature statistics; `get()` hands over the compiled step.
"""
import functools
import hashlib
import json
import os
import threading
import time

import jax
import numpy as np

from audiotl_jax import fileio

FORMAT = 1
MAX_ENTRIES = 256  # the least recently used are removed beyond this (a few MB each)
_MAGIC = b"audiotl-program\n"


def compile(jitted, *args, cache_dir=None):  # pylint: disable=redefined-builtin
  """`jitted.lower(*args).compile()`, read from `cache_dir` when this program was compiled on
  this machine before (None: beside XLA's persistent cache, or no cache when that is off).
  `args` may be arrays or `jax.ShapeDtypeStruct`s."""
  traced = jitted.trace(*args)
  cache_dir = programs_dir() if cache_dir is None else fileio.path(cache_dir)
  if cache_dir is None or not fileio.is_local(cache_dir):
    return traced.lower().compile()
  from jax.experimental import serialize_executable  # pylint: disable=g-import-not-at-top
  path = cache_dir / f"{fingerprint(traced)}.bin"
  payload = _read(path)
  if payload is not None:
    try:
      return serialize_executable.deserialize_and_load(payload, traced.in_tree, traced.out_tree)
    except Exception:  # pylint: disable=broad-except  (another jaxlib's bytes: compile again)
      pass
  _watch_xla_cache()
  _xla_cache.hit = False
  compiled = traced.lower().compile(compiler_options=_OWN_KEY)
  if _xla_cache.hit:
    # An executable XLA's persistent cache loaded serialises without its code on the CPU
    # (running what it gives back fails: "Function ... not found"): store only real compiles.
    return compiled
  try:
    blob, _, _ = serialize_executable.serialize(compiled)
    cache_dir.mkdir(parents=True, exist_ok=True)
    fileio.write_bytes(path, _MAGIC + hashlib.sha256(blob).digest() + blob)
    _prune(cache_dir)
  except (OSError, TypeError, ValueError):
    pass  # a cache, not a result: a full disk or an executable that cannot be serialized
  return compiled


# Set to its default value, so the code is the same; it only gives these programs their own
# entries in XLA's cache. Otherwise a program XLA's cache holds from before would be loaded from
# it on every run and never reach this cache (see above).
_OWN_KEY = {"xla_embed_ir_in_executable": False}
_xla_cache = threading.local()  # .hit: whether this thread's last compile was read from XLA's


@functools.cache
def _watch_xla_cache() -> None:
  from jax import monitoring  # pylint: disable=g-import-not-at-top

  def on_event(event, **_):
    if event == "/jax/compilation_cache/cache_hits":
      _xla_cache.hit = True
  monitoring.register_event_listener(on_event)


def programs_dir():
  """Where `compile` keeps programs: a folder in XLA's persistent compilation cache."""
  cache = jax.config.jax_compilation_cache_dir
  return fileio.path(cache) / "audiotl-programs" if cache else None


def fingerprint(traced) -> str:
  h = hashlib.sha256()
  h.update(_machine().encode())
  h.update(str(traced.jaxpr).encode())
  for c in traced.jaxpr.consts:
    c = np.asarray(c)
    h.update(f"{c.dtype}{c.shape}".encode())
    h.update(np.ascontiguousarray(c).tobytes())
  h.update(repr(traced.in_avals).encode())
  params = {k: v for k, v in traced._params.items() if k != "jaxpr"}  # pylint: disable=protected-access
  h.update(repr(sorted(params.items())).encode())
  for s in list(params.get("in_shardings", ())) + list(params.get("out_shardings", ())):
    ids = getattr(s, "_device_assignment", None)  # the device ids, which NamedSharding's repr omits
    h.update(repr([d.id for d in ids] if ids is not None else None).encode())
  return h.hexdigest()


@functools.cache
def _machine() -> str:
  import jaxlib  # pylint: disable=g-import-not-at-top
  backend = jax.devices()[0].client
  return json.dumps({
      "format": FORMAT, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
      "platform": backend.platform, "platform_version": backend.platform_version,
      "devices": [(d.id, d.process_index, d.device_kind) for d in jax.devices()],
      "process": [jax.process_index(), jax.process_count()],
      "config": sorted((k, repr(v)) for k, v in jax.config.values.items()),
      "env": [os.environ.get(k, "") for k in ("XLA_FLAGS", "LIBTPU_INIT_ARGS")],
      "cpu": _cpu_flags(),
  })


def _cpu_flags() -> str:
  """The CPU's instruction-set flags: code compiled for the host CPU may not run on another, and a
  cache folder in a shared home is seen by every node of a cluster."""
  try:
    with open("/proc/cpuinfo") as f:
      return next((line for line in f if line.startswith(("flags", "Features"))), "")
  except OSError:
    return os.uname().machine


def _read(path) -> bytes | None:
  """The executable stored at `path`, or None when there is none or it is damaged (a truncated
  or corrupted file never reaches XLA: the checksum is compared first, and the file removed)."""
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError:
    return None
  head = len(_MAGIC) + 32
  blob = data[head:]
  if (len(data) < head or not data.startswith(_MAGIC)
      or hashlib.sha256(blob).digest() != data[len(_MAGIC):head]):
    try:  # removed, not left: when XLA's cache serves the program, nothing would replace it
      os.unlink(path)
    except OSError:
      pass
    return None
  try:
    os.utime(path)  # recently used: the last to be pruned
  except OSError:
    pass
  return blob


def _prune(cache_dir) -> None:
  """The least recently used entries beyond MAX_ENTRIES, and the temporary file of a write that
  was killed midway (an hour old: another process may be writing one now)."""
  for p in cache_dir.glob("*.tmp"):
    try:
      if os.stat(p).st_mtime < time.time() - 3600:
        os.unlink(p)
    except OSError:
      pass
  entries = []
  for p in cache_dir.glob("*.bin"):
    try:
      entries.append((os.stat(p).st_mtime, p))
    except OSError:
      pass  # removed by another process meanwhile
  for _, p in sorted(entries)[:max(0, len(entries) - MAX_ENTRIES)]:
    try:
      os.unlink(p)
    except OSError:
      pass


class Ahead:
  """`compile(jitted, *args)` in a background thread, after `after`'s; `args` may be arrays or
  `jax.ShapeDtypeStruct`s (with their shardings). `get()` waits for it and returns the compiled
  function, or raises what compiling raised (the same error the first call would have given)."""

  def __init__(self, jitted, *args, after: "Ahead | None" = None):
    self._result, self._error = None, None
    self._thread = threading.Thread(target=self._compile, args=(jitted, args, after),
                                    daemon=True, name="compile-ahead")
    self._thread.start()

  def _compile(self, jitted, args, after):
    try:
      if after is not None:  # what is needed first compiles first, not beside this
        after.wait()
      self._result = compile(jitted, *args)
    except BaseException as e:  # pylint: disable=broad-except  (re-raised by get)
      self._error = e

  def wait(self) -> None:
    self._thread.join()

  def get(self):
    self.wait()
    if self._error is not None:
      raise self._error
    return self._result


def like(tree):
  """Arrays -> `jax.ShapeDtypeStruct`s with their shardings: what compiling needs of them, held
  without holding the arrays (a donated state's buffers are gone after the first step)."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                      tree)


def shapes(spec: dict, sharding=None) -> dict:
  """{key: (shape, dtype)} -> {key: jax.ShapeDtypeStruct}, laid out as `sharding` says."""
  return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
          for k, (shape, dtype) in spec.items()}
