"""Device prefetch (train/prefetch.py), zero-copy record decoding, and the step's non-finite flag."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import msgpack
import numpy as np
import optax

from audiotl_jax.data import pipeline, records
from audiotl_jax.data.dataset import PreparedDataset
from audiotl_jax.train import checkpoints as checkpointing
from audiotl_jax.train import mesh as mesh_lib, prefetch, step as steps
from audiotl_jax.train.state import TrainState
from conftest import tiny_pretrain_config


def test_decode_reads_audio_in_place_and_old_layouts():
  audio = np.arange(-5, 6, dtype=np.int16)
  raw = records.encode(id="clip-é", audio=audio, labels=[4, 2])
  rec = records.decode(raw)
  assert rec["id"] == "clip-é" and rec["labels"].tolist() == [4, 2]
  np.testing.assert_array_equal(rec["audio"], audio)
  assert rec["audio"].base is raw  # a view of the record, not a copy
  other = msgpack.packb({"labels": [1], "id": "x", "audio": audio.tobytes()})  # another key order
  np.testing.assert_array_equal(records.decode(other)["audio"], audio)


def _iterator(prepared):
  return pipeline.train_iterator(PreparedDataset(prepared["audioset"]), "balanced_train",
                                 batch_size=8,
                                 clip_samples=1600, seed=0, process_index=0, process_count=1)


def test_prefetch_state_is_that_of_the_consumed_batches(prepared):
  mesh = mesh_lib.make_mesh()
  bare, ahead = _iterator(prepared), prefetch.DevicePrefetch(_iterator(prepared), mesh, depth=3)
  for _ in range(2):
    np.testing.assert_array_equal(np.asarray(next(ahead)["audio"]), next(bare)["audio"])
  # The thread has read ahead; the state must still be the one after two batches.
  assert ahead.get_state() == bare.get_state()
  resumed = prefetch.DevicePrefetch(_iterator(prepared), mesh, depth=2)
  resumed.set_state(ahead.get_state())
  for _ in range(3):
    np.testing.assert_array_equal(np.asarray(next(resumed)["audio"]), next(bare)["audio"])
  ahead.close()
  resumed.close()


def test_pretrain_resume_with_prefetch_matches_uninterrupted(prepared, tmp_path):
  from audiotl_jax.stages import pretrain
  whole, parts = tmp_path / "whole", tmp_path / "parts"
  config = lambda **kw: tiny_pretrain_config(prepared["audioset"], **{"data.prefetch": 3}, **kw)
  pretrain.run(config(), whole)
  assert pretrain.run(config(stop_at=2), parts) == {"stopped_at": 2}
  pretrain.run(config(), parts)
  mw, _, _ = checkpointing.load_model(whole / "checkpoints" / "4")
  mp, _, _ = checkpointing.load_model(parts / "checkpoints" / "4")
  for a, b in zip(jax.tree.leaves(mw), jax.tree.leaves(mp)):
    np.testing.assert_array_equal(a, b)  # bit-identical


class _Sqrt(nn.Module):
  """Finite loss, infinite gradient for one leaf: d sqrt(a)/da at a = 0."""

  @nn.compact
  def __call__(self, x, train=False):
    a = self.param("a", nn.initializers.zeros, (3,))
    b = self.param("b", nn.initializers.ones, (3,))
    return x.mean(-1, keepdims=True) * b + jnp.sqrt(a).sum(), {}


def _finite(tx, params):
  model = _Sqrt()
  step = steps.make_train_step(model, lambda audio, **_: audio.astype(jnp.float32), tx,
                               loss_fn=steps.bce_loss, augment=None, num_classes=3,
                               target="multihot", model_train=False)
  state = TrainState(step=jnp.int32(0), params=params, batch_stats={},
                     opt_state=tx.init(params), rng=jax.random.key(0))
  batch = {"audio": jnp.ones((2, 4), jnp.int16), "label": jnp.zeros((2, 3))}
  new, m = jax.jit(step)(state, batch, None)
  return bool(m["finite"]), new


def test_one_nonfinite_leaf_flags_the_step():
  good = {"a": jnp.ones(3), "b": jnp.ones(3)}
  assert _finite(optax.sgd(0.1), good)[0]
  # A NaN/Inf gradient in one leaf only, with a finite loss.
  ok, new = _finite(optax.sgd(0.1), {"a": jnp.array([1.0, 0.0, 1.0]), "b": jnp.ones(3)})
  assert not ok
  np.testing.assert_array_equal(new.params["a"], [1.0, 0.0, 1.0])  # the old parameters are kept
  # Finite gradients, a NaN update in one leaf (a NaN learning rate for that leaf alone).
  nan_b = optax.multi_transform({"a": optax.sgd(0.1), "b": optax.sgd(jnp.nan)},
                                {"a": "a", "b": "b"})
  assert not _finite(nan_b, good)[0]
