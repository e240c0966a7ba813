"""The HEAR 2021 API (`audiotl_jax.hear`) against the specification, on sine bursts of known
length: shapes, dtypes, timestamps in ms that span the sound, for every model family."""
import sys
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from audiotl_jax import hear, models
from audiotl_jax.errors import UserError
from audiotl_jax.features import featurizer
from audiotl_jax.train import checkpoints

SR = 16000
HEAR_RATES = (16000, 22050, 44100, 48000)  # the rates the HEAR tasks are prepared at


def burst(seconds, start=None, length=None, freq=1000.0, n=2):
  """`n` sounds of `seconds`: silence with a sine burst (the whole sound by default)."""
  t = np.arange(int(round(seconds * SR))) / SR
  start = 0.0 if start is None else start
  length = seconds if length is None else length
  on = (t >= start) & (t < start + length)
  x = np.where(on, 0.5 * np.sin(2 * np.pi * freq * t), 0.0).astype(np.float32)
  return np.stack([x * (1.0 - 0.3 * i) for i in range(n)])


@pytest.fixture(scope="module")
def model(pretrained):
  return hear.load_model(str(pretrained))


def test_the_model_has_the_hear_attributes(model):
  assert model.sample_rate == SR and isinstance(model.sample_rate, int)
  assert model.sample_rate in HEAR_RATES
  inner = model.model(burst(1.0), SR)
  assert model.scene_embedding_size == inner["embedding"].shape[1] == 32   # cnn:tiny
  assert model.timestamp_layer == "block4" and model.timestamp_embedding_size == 32


def _check_timestamps(emb, ts, model, n, seconds, hop=hear.HOP_MS):
  count = int(np.floor(seconds * 1000 / hop + 1e-6)) + 1
  assert emb.shape == (n, count, model.timestamp_embedding_size) and emb.dtype == np.float32
  assert ts.shape == (n, count) and ts.dtype == np.float32
  assert np.isfinite(emb).all()
  assert (ts == ts[:1]).all()                      # one time line for the batch
  assert ts[0, 0] == 0.0 and (np.diff(ts[0]) > 0).all()
  assert seconds * 1000 - hop < ts[0, -1] <= seconds * 1000   # spans the sound
  np.testing.assert_allclose(np.diff(ts[0]), hop)


def test_scene_and_timestamp_embeddings_on_sine_bursts(model):
  stamps = []
  for seconds in (0.3, 1.0, 2.45):
    x = burst(seconds)
    scene = hear.get_scene_embeddings(x, model)
    assert scene.shape == (2, model.scene_embedding_size) and scene.dtype == np.float32
    assert np.isfinite(scene).all()
    np.testing.assert_array_equal(scene, model.model(x, SR)["embedding"])
    emb, ts = hear.get_timestamp_embeddings(x, model)
    _check_timestamps(emb, ts, model, 2, seconds)
    stamps.append(ts[0])
  assert len(stamps[0]) < len(stamps[1]) < len(stamps[2])   # grows with the length
  for short, long in zip(stamps, stamps[1:]):               # and extends, never shifts
    np.testing.assert_array_equal(long[:len(short)], short)


def test_a_burst_shows_up_where_it_is(model):
  x = burst(3.0, start=1.5, length=0.5, n=1)
  emb, ts = hear.get_timestamp_embeddings(x, model)
  at = lambda ms: emb[0, int(np.argmin(np.abs(ts[0] - ms)))]
  quiet = np.linalg.norm(at(400) - at(700))    # silence, away from the burst and the edges
  loud = np.linalg.norm(at(1750) - at(700))
  assert loud > 10 * quiet + 1e-6


def test_native_rows_and_other_hops(pretrained):
  native = hear.load_model(str(pretrained), hop_ms=0)
  x = burst(2.0)
  emb, ts = hear.get_timestamp_embeddings(x, native)
  # block4 of cnn:tiny: a row every 16 frames of 10 ms, centred on its frames' middle.
  np.testing.assert_allclose(ts[0], (np.arange(len(ts[0])) * 16 + 7.5) * 10, rtol=1e-6)
  assert ts[0, -1] <= 2000 and len(ts[0]) == 13 and emb.shape == (2, 13, 32)
  fine = hear.load_model(str(pretrained), hop_ms=25, timestamp_layer="block2")
  emb, ts = hear.get_timestamp_embeddings(x, fine)
  assert fine.timestamp_embedding_size == 16
  _check_timestamps(emb, ts, fine, 2, 2.0, hop=25)


def test_windows_when_the_layer_has_no_time_axis(pretrained):
  model = hear.load_model(str(pretrained), timestamp_layer="embedding", window_hop_ms=100)
  assert model.timestamp_embedding_size == model.scene_embedding_size
  x = burst(1.2)
  emb, ts = hear.get_timestamp_embeddings(x, model)
  _check_timestamps(emb, ts, model, 2, 1.2)
  # On the window centres (every 100 ms) the rows are the windows' embeddings themselves.
  rows, centres = model.model.frames(x, SR, layer="embedding", hop_seconds=0.1)
  np.testing.assert_allclose(centres * 1000, np.arange(13) * 100.0, atol=1e-9)
  np.testing.assert_allclose(emb[:, ::2], rows, atol=1e-6)


def test_interpolation_is_linear_and_holds_the_edges():
  values = np.array([[[0.0], [10.0], [20.0]]])
  out = hear.interpolate(values, np.array([100.0, 200.0, 300.0]),
                         np.array([0.0, 100.0, 150.0, 300.0, 400.0]))
  np.testing.assert_allclose(out[0, :, 0], [0.0, 0.0, 5.0, 20.0, 20.0])


def test_numpy_jax_and_torch_inputs(model, monkeypatch):
  x = burst(1.0)
  want = hear.get_scene_embeddings(x, model)
  np.testing.assert_array_equal(hear.get_scene_embeddings(jnp.asarray(x), model), want)

  class Tensor:  # what hear needs of a torch tensor, so the test runs without torch
    def __init__(self, a):
      self.a = a

    def detach(self):
      return self

    def cpu(self):
      return self

    def numpy(self):
      return self.a

  fake = types.SimpleNamespace(Tensor=Tensor, from_numpy=Tensor)
  monkeypatch.setitem(sys.modules, "torch", fake)
  out = hear.get_scene_embeddings(Tensor(x), model)
  assert isinstance(out, Tensor)
  np.testing.assert_array_equal(out.numpy(), want)
  emb, ts = hear.get_timestamp_embeddings(Tensor(x), model)
  assert isinstance(emb, Tensor) and isinstance(ts, Tensor) and ts.numpy().shape[0] == 2


def test_bad_calls_are_user_errors(model, pretrained):
  with pytest.raises(UserError, match="model_file_path"):
    hear.load_model()
  with pytest.raises(UserError, match="2-D"):
    hear.get_scene_embeddings(burst(1.0)[0], model)
  with pytest.raises(UserError, match="non-finite"):
    hear.get_timestamp_embeddings(np.full((1, 800), np.nan, np.float32), model)
  with pytest.raises(UserError, match="hop_ms"):
    hear.load_model(str(pretrained), hop_ms=-5)


# ------------------------------------------------------------------ every family
def _frontend(family: str) -> dict:
  logmel = dict(kind="logmel", sample_rate=SR, n_fft=400, hop_length=160, n_mels=64, fmin=50.0,
                fmax=8000.0, target_frames=0)
  if family == "ast":
    return dict(logmel, kind="fbank", n_mels=128, target_frames=100)
  if family == "panns":
    from audiotl_jax.features import panns
    return dict(logmel, kind="panns", **panns.setup("16k"))
  if family == "vggish":
    from audiotl_jax.features import vggish
    return vggish.frontend_config()
  return logmel


def _tiny_models():
  names = models.list_models()
  return [n for n in names if n.endswith(":tiny")]


@pytest.mark.parametrize("name", _tiny_models())
def test_every_family_through_the_hear_api(name, tmp_path):
  """A randomly initialised checkpoint of each family's tiny variant, as `audiotl import` or
  `pretrain` would write it."""
  fc = _frontend(name.partition(":")[0])
  net = models.get_model(name, num_classes=3)
  frames = featurizer.feature_frames(ml_collections.ConfigDict(fc), SR)
  variables = jax.device_get(jax.jit(lambda: net.init(
      jax.random.PRNGKey(0), jnp.zeros((1, frames, fc["n_mels"])), train=False))())
  meta = {"model": name, "num_classes": 3, "frontend": fc, "norm": {"mean": -30.0, "std": 15.0},
          "clip_seconds": 1.0, "classes": [{"id": str(i), "name": str(i)} for i in range(3)]}
  ckpt = checkpoints.Checkpointer(tmp_path / "run")
  ckpt.save_model(0, {"params": variables["params"],
                      "batch_stats": variables.get("batch_stats", {})}, meta)
  ckpt.close()
  model = hear.load_model(str(tmp_path / "run"))
  x = burst(2.3)
  scene = hear.get_scene_embeddings(x, model)
  assert scene.shape == (2, model.scene_embedding_size) and np.isfinite(scene).all()
  emb, ts = hear.get_timestamp_embeddings(x, model)
  _check_timestamps(emb, ts, model, 2, 2.3)
  time_layers = model.model.time_layers
  if name.startswith("ast"):  # the fbank has a fixed length: windows instead
    assert not time_layers and model.timestamp_layer == "embedding"
  else:
    assert model.timestamp_layer == next(reversed(time_layers))
