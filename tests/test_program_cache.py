"""The program cache (`train/aot.py`): a hit runs the program it was stored for, and only that.

What would break silently if it were wrong: a run given another run's program (the key misses
a difference), a damaged or half-written entry loaded, or an entry stored from an executable
XLA's persistent cache loaded, which on the CPU serialises without its code and fails when run.
"""
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from audiotl_jax.train import aot, mesh as mesh_lib
from conftest import REPO


def _step(scale):
  """A donated, sharded update, like the train step's: (state, batch) -> (state, loss).

  Each test compiles its own `scale`: once a CLI test has run, XLA's persistent cache stores
  every program of the session, and a program it holds is (rightly) never stored here."""
  mesh = mesh_lib.make_mesh()
  rep, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))

  def step(w, x):
    loss = jnp.mean(jax.nn.relu(x @ w) ** 2)
    return w - scale * jax.grad(lambda w: jnp.mean(jax.nn.relu(x @ w) ** 2))(w), loss

  jitted = jax.jit(step, donate_argnums=(0,), in_shardings=(rep, rows),
                   out_shardings=(rep, rep))
  w = jax.device_put(np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32), rep)
  x = jax.device_put(np.random.default_rng(1).normal(size=(32, 16)).astype(np.float32), rows)
  return jitted, w, x


def _copy(w):
  """A new array like `w` (the step donates its first argument)."""
  return jax.device_put(np.asarray(w), w.sharding)


def _lowerings(fn):
  """How many programs `fn()` lowered (JAX's lowering event, counted)."""
  from jax._src import monitoring  # the public module registers, only this one unregisters
  seen = []

  def listener(event, duration, **_):
    if event.endswith("jaxpr_to_mlir_module_duration"):
      seen.append(event)
  monitoring.register_event_duration_secs_listener(listener)
  try:
    out = fn()
  finally:
    monitoring.unregister_event_duration_listener(listener)
  return out, len(seen)


def test_a_hit_skips_lowering_and_runs_the_same_program(tmp_path):
  # Each call gets its own jit, as each run has: JAX's in-process caches key on the function.
  jitted, w, x = _step(0.1)
  expect = jitted.lower(w, x).compile()(_copy(w), x)
  _, lowered = _lowerings(lambda: aot.compile(_step(0.1)[0], w, x, cache_dir=tmp_path))
  assert lowered == 1 and len(list(tmp_path.glob("*.bin"))) == 1
  again, lowered = _lowerings(lambda: aot.compile(_step(0.1)[0], w, x, cache_dir=tmp_path))
  assert lowered == 0  # read from the cache, not lowered
  w2 = _copy(w)
  new_w, loss = again(w2, x)
  assert w2.is_deleted()  # the state is still donated
  np.testing.assert_array_equal(np.asarray(new_w), np.asarray(expect[0]))
  np.testing.assert_array_equal(np.asarray(loss), np.asarray(expect[1]))
  assert new_w.sharding.is_equivalent_to(w.sharding, 2)


def test_programs_that_differ_anywhere_have_different_keys(tmp_path):
  """A closed-over constant, a shape, a sharding: each is another program."""
  jitted, w, x = _step(0.1)
  key = aot.fingerprint(jitted.trace(w, x))
  assert aot.fingerprint(_step(0.1)[0].trace(w, x)) == key  # the same program, rebuilt
  assert aot.fingerprint(_step(0.2)[0].trace(w, x)) != key  # a constant differs
  assert aot.fingerprint(jitted.trace(w, x[:16])) != key  # a shape differs
  mesh = mesh_lib.make_mesh(4)
  other = jax.jit(jitted, in_shardings=(NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))))
  assert aot.fingerprint(other.trace(w, x)) != key  # four devices, not eight
  big = jnp.arange(1000.0)
  with_const = lambda c: jax.jit(lambda v: v + c)  # noqa: E731  (an array constant)
  assert (aot.fingerprint(with_const(big).trace(1.0))
          != aot.fingerprint(with_const(big.at[999].set(0.0)).trace(1.0)))


@pytest.mark.parametrize("damage,scale", [("truncate", 0.11), ("flip", 0.12), ("empty", 0.13)])
def test_a_damaged_entry_is_compiled_again_and_replaced(tmp_path, damage, scale):
  jitted, w, x = _step(scale)
  aot.compile(jitted, w, x, cache_dir=tmp_path)
  (entry,) = tmp_path.glob("*.bin")
  data = entry.read_bytes()
  if damage == "truncate":
    entry.write_bytes(data[:len(data) // 2])
  elif damage == "flip":
    entry.write_bytes(data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:])
  else:
    entry.write_bytes(b"")
  compiled, lowered = _lowerings(lambda: aot.compile(_step(scale)[0], w, x, cache_dir=tmp_path))
  assert lowered == 1
  # Replaced by a good entry, or removed where XLA's persistent cache served the program (an
  # executable it loaded is never stored); never left damaged.
  assert not entry.exists() or aot._read(entry) is not None  # pylint: disable=protected-access
  np.testing.assert_array_equal(np.asarray(compiled(_copy(w), x)[1]),
                                np.asarray(jitted.lower(w, x).compile()(
                                    _copy(w), x)[1]))


def test_an_unwritable_cache_still_compiles(tmp_path):
  jitted, w, x = _step(0.14)
  blocked = tmp_path / "file"
  blocked.write_text("not a folder")
  compiled = aot.compile(jitted, w, x, cache_dir=blocked / "programs")
  assert float(compiled(_copy(w), x)[1]) > 0


def test_old_entries_are_pruned(tmp_path, monkeypatch):
  """Beyond MAX_ENTRIES the least recently used go, and so does what a write killed midway left
  (an hour old; a younger one may be another process's write in progress)."""
  monkeypatch.setattr(aot, "MAX_ENTRIES", 2)
  stale, fresh = tmp_path / "a.bin.1-dead.tmp", tmp_path / "b.bin.2-live.tmp"
  stale.write_bytes(b"half")
  fresh.write_bytes(b"half")
  os.utime(stale, (0, 0))
  for scale in (0.31, 0.32, 0.33):
    jitted, w, x = _step(scale)
    aot.compile(jitted, w, x, cache_dir=tmp_path)
  assert len(list(tmp_path.glob("*.bin"))) == 2
  assert not stale.exists() and fresh.exists()


_PROCESS = textwrap.dedent("""
    import sys, jax, numpy as np
    jax.config.update("jax_compilation_cache_dir", sys.argv[1])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    from audiotl_jax.train import aot
    f = jax.jit(lambda x: jax.lax.rsqrt(jax.numpy.mean(x * x, -1, keepdims=True) + 1e-5) * x @ x.T)
    x = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    print(float((f if sys.argv[2] == "plain" else aot.compile(f, x))(x).sum()))
""")


def test_new_processes_share_programs_but_never_store_one_xla_loaded(tmp_path):
  """In fresh processes, as runs are. A plain jit of the program first fills XLA's cache: that
  entry must not keep the program out of this cache. Then the first compiles and stores; the
  second reads it; with the program gone but XLA's entry kept, the third loads XLA's and must not
  store it (it would serialise without its code); the fourth still runs."""
  env = {**os.environ, "XLA_FLAGS": "", "PYTHONPATH": str(REPO)}
  programs = tmp_path / "xla" / "audiotl-programs"

  def run(how="aot"):
    proc = subprocess.run([sys.executable, "-c", _PROCESS, str(tmp_path / "xla"), how], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return float(proc.stdout.split()[-1])

  plain = run("plain")
  first = run()
  assert first == plain
  assert len(list(programs.glob("*.bin"))) == 1
  assert run() == first
  for entry in programs.glob("*.bin"):
    entry.unlink()
  assert run() == first
  assert not list(programs.glob("*.bin"))  # loaded from XLA's cache: not stored
  assert run() == first
