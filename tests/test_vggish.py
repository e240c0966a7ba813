"""VGGish: parameter counts, its frontend against a numpy re-implementation of mel_features, the
example framing, the forward contract, transfer masks, the post-processing and the importer.

The torch-layout weights here are random and written as numpy dicts (or safetensors / npz files,
which need no torch); the parity with a PyTorch re-creation is tests/torch/test_vggish_parity.py.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiotl_jax import models
from audiotl_jax.cli import main as cli
from audiotl_jax.errors import UserError
from audiotl_jax.features import featurizer
from audiotl_jax.features import vggish as vf
from audiotl_jax.models import import_vggish, transfer
from audiotl_jax.models import vggish as vm
from audiotl_jax.train import checkpoints as checkpointing


# ------------------------------------------------------------------ a numpy mel_features
def reference_examples(wave: np.ndarray) -> np.ndarray:
  """mel_features.log_mel_spectrogram + vggish_input's example framing, in float64, written
  out step by step (loops, not the vectorised forms the module uses)."""
  rate, win, hop, fft, bands = 16000, 400, 160, 512, 64
  count = 1 + (len(wave) - win) // hop
  window = np.array([0.5 - 0.5 * math.cos(2 * math.pi * k / win) for k in range(win)])
  frames = np.stack([wave[f * hop:f * hop + win] * window for f in range(count)])
  magnitude = np.abs(np.fft.rfft(frames, fft))
  mel = lambda hz: 1127.0 * np.log(1.0 + hz / 700.0)
  bin_mel = mel(np.linspace(0, rate / 2, fft // 2 + 1))
  edges = np.linspace(mel(125.0), mel(7500.0), bands + 2)
  weights = np.zeros((fft // 2 + 1, bands))
  for b in range(bands):
    lo, mid, hi = edges[b], edges[b + 1], edges[b + 2]
    for k in range(1, fft // 2 + 1):  # bin 0 (DC) stays zero, as HTK
      up, down = (bin_mel[k] - lo) / (mid - lo), (hi - bin_mel[k]) / (hi - mid)
      weights[k, b] = max(0.0, min(up, down))
  log_mel = np.log(magnitude @ weights + 0.01)
  n = len(log_mel) // 96
  return log_mel[:n * 96].reshape(n, 96, bands)


def _pcm(seconds, seed=0):
  rng = np.random.default_rng(seed)
  n = int(seconds * 16000)
  t = np.arange(n) / 16000
  wave = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(n)
  return np.clip(np.round(wave * 32768), -32768, 32767).astype(np.int16)


def test_frontend_matches_mel_features():
  audio = np.stack([_pcm(3.3, 0), _pcm(3.3, 1)])
  featurize = jax.jit(featurizer.make_featurizer(vf.frontend_config(), {"mean": 5.0, "std": 9.0}))
  got = np.asarray(featurize(jnp.asarray(audio)))
  assert got.shape == (2, 3 * 96, 64)  # 1 + (52800 - 400) // 160 = 328 frames: 3 examples
  for clip, row in zip(audio, got):
    ref = reference_examples(clip / 32768.0).reshape(-1, 64)
    # Normalisation statistics are ignored: the weights expect mel_features' values.
    np.testing.assert_allclose(row, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("samples,examples", [
    (16000, 1), (15600, 1), (400 + 191 * 160, 2), (400 + 191 * 160 - 1, 1), (160000, 10),
    (15599, 1), (1, 1)])
def test_example_framing_counts(samples, examples):
  assert vf.num_examples(samples) == examples
  assert featurizer.feature_frames(vf.frontend_config(), samples) == 96 * examples
  if samples >= 15600:  # as vggish_input: whole examples only
    assert (1 + (samples - 400) // 160) // 96 == examples


def test_short_clips_are_padded_with_silence():
  clip = _pcm(0.5)
  got = np.asarray(vf.log_mel_examples(jnp.asarray(clip[None] / 32768.0, jnp.float32)))
  padded = np.concatenate([clip / 32768.0, np.zeros(15600 - len(clip))])
  np.testing.assert_allclose(got[0], reference_examples(padded)[0], atol=1e-4, rtol=0)
  with pytest.raises(UserError, match="16000 Hz and 64 mel bands"):
    featurizer.make_featurizer(dict(vf.frontend_config(), n_mels=128), None)


# ------------------------------------------------------------------ the model
def test_parameter_counts(capsys):
  params = models.param_shapes(models.get_model("vggish:base", num_classes=527), 96, 64)["params"]
  backbone = {k: v for k, v in params.items() if k != "head"}
  assert models.count_params(backbone) == 72_141_184
  assert models.count_params(params) == 72_209_167
  assert models.count_params({k: params[k] for k in ("block1", "block2", "block3",
                                                     "block4")}) == 4_499_712
  assert params["embedding"]["fc1"]["kernel"].shape == (512 * 6 * 4, 4096)
  assert cli(["models", "--num-classes", "527"]) == 0
  line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("vggish:base"))
  assert line.split()[-1] == "72,209,167"


def _variables(model, frames=96, seed=0):
  shapes = models.param_shapes(model, frames, 64)
  rng = np.random.default_rng(seed)
  fill = lambda a: np.asarray(rng.normal(0, 1 / math.sqrt(np.prod(a.shape[:-1]) or 1), a.shape),
                              np.float32)
  return jax.tree.map(fill, shapes)


def test_tiny_forward_examples_and_layers():
  model = models.get_model("vggish:tiny", num_classes=5)
  variables = _variables(model)
  x = np.random.default_rng(1).normal(size=(2, 3 * 96 + 7, 64)).astype(np.float32)
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  logits, out = apply(variables, x)
  assert logits.shape == (2, 5) and logits.dtype == jnp.float32
  assert out["example_embeddings"].shape == (2, 3, 16)
  np.testing.assert_allclose(out["embedding"], out["example_embeddings"].mean(1), rtol=1e-6)
  assert out["pooled"].shape == out["embedding"].shape == (2, 16)
  assert out["fc1"].shape == (2, 32) and "embedding_pca" not in out
  # Examples side by side in time: 3 x (96 / 2) frames, 64 / 2 bands after block1.
  assert out["block1"].shape == (2, 144, 32, 8) and out["block4"].shape == (2, 18, 4, 32)
  # Each example runs on its own; the 7 frames past the last whole one are dropped.
  _, single = apply(variables, x[:1, 96:192])
  np.testing.assert_allclose(single["example_embeddings"][0, 0],
                             out["example_embeddings"][0, 1], rtol=1e-5, atol=1e-6)
  # Fewer frames than one example (other front ends): zero-padded to one.
  _, short = apply(variables, x[:, :50])
  np.testing.assert_allclose(short["embedding"], apply(variables, np.pad(
      x[:, :50], ((0, 0), (0, 46), (0, 0))))[1]["embedding"], rtol=1e-6)


def _trainable(spec, name="vggish:base"):
  model, ctx = transfer.model_for(spec, name, num_classes=10)
  shapes = models.param_shapes(model, 96, 64)
  s = transfer.make_strategy(spec, shapes["params"], {}, model.block_names(), **ctx)
  flat = {transfer.path_str(p): t for p, t in jax.tree_util.tree_leaves_with_path(s.trainable)}
  return model, s, shapes["params"], flat


def test_transfer_masks():
  _, s, params, flat = _trainable("linear")
  assert transfer.count_trainable(params, s.trainable) == 128 * 10 + 10 and not s.model_train
  _, s, params, flat = _trainable("partial:2")
  assert not flat["block2/conv1/kernel"] and not flat["block1/conv1/bias"]
  assert flat["block3/conv2/kernel"] and flat["embedding/fc1/kernel"] and flat["head/kernel"]
  _, s, params, flat = _trainable("partial:4")
  assert transfer.count_trainable(params, s.trainable) == 67_641_472 + 1290
  _, s, params, flat = _trainable("bitfit")
  assert flat["block4/conv2/bias"] and flat["embedding/fc3/bias"]
  assert not flat["block4/conv2/kernel"] and not flat["embedding/fc1/kernel"]
  model, s, params, flat = _trainable("conv_adapter:8")
  assert params["block2"]["adapter"]["down"]["kernel"].shape == (1, 1, 128, 16)
  assert flat["block4/adapter/up/kernel"] and not flat["block4/conv1/kernel"]
  _, s, params, flat = _trainable("mlp:32")
  assert set(params["head"]) == {"hidden", "out"}
  assert transfer.count_trainable(params, s.trainable) == 128 * 32 + 32 + 32 * 10 + 10
  _, s, params, flat = _trainable("full")
  assert all(flat.values()) and s.model_train


# ------------------------------------------------------------------ post-processing
def _release_postprocess(emb, vectors, means):
  """torchvggish's Postprocessor, in numpy: column means, premultiplied eigenvectors."""
  pca = (vectors @ (emb.T - means.reshape(-1, 1))).T
  return np.round((np.clip(pca, -2.0, 2.0) + 2.0) * (255.0 / 4.0)), pca


def _pca(dim, seed=3):
  rng = np.random.default_rng(seed)
  return {"pca_eigen_vectors": rng.normal(0, 0.3, (dim, dim)).astype(np.float32),
          "pca_means": rng.normal(0, 0.5, (dim, 1)).astype(np.float32)}


def test_postprocess_matches_the_release_math():
  emb = np.random.default_rng(0).uniform(0, 2, (50, 128)).astype(np.float32)
  pca = _pca(128)
  got_pca, got_q = vm.postprocess(emb, pca["pca_eigen_vectors"], pca["pca_means"][:, 0])
  want_q, want_pca = _release_postprocess(emb.astype(np.float64), pca["pca_eigen_vectors"],
                                          pca["pca_means"])
  np.testing.assert_allclose(got_pca, want_pca, rtol=1e-5, atol=1e-5)
  assert got_q.dtype == jnp.uint8
  # Values within float rounding of a .5 boundary may round either way; no more than 1 apart.
  assert np.abs(np.asarray(got_q, np.int32) - want_q).max() <= 1
  assert np.mean(np.asarray(got_q) == want_q) > 0.999


# ------------------------------------------------------------------ the importer
def to_torchvggish(params: dict, convs) -> dict:
  """Our params -> torchvggish's state dict (the importer's inverse), numpy."""
  sd = {}
  for ours, theirs in import_vggish.torch_layout(convs).items():
    block, layer = ours.split("/")
    kernel = np.asarray(params[block][layer]["kernel"])
    sd[theirs + "weight"] = kernel.transpose(3, 2, 0, 1) if kernel.ndim == 4 else kernel.T
    sd[theirs + "bias"] = np.asarray(params[block][layer]["bias"])
  return sd


def test_torch_layout_indices():
  layout = import_vggish.torch_layout((1, 1, 2, 2))
  assert [v for k, v in layout.items() if k.startswith("block")] == [
      f"features.{i}." for i in (0, 3, 6, 8, 11, 13)]
  assert layout["embedding/fc3"] == "embeddings.4."


def test_importer_roundtrip_and_errors():
  model = models.get_model("vggish:tiny", num_classes=16)
  params = _variables(model)["params"]
  sd = to_torchvggish(params, model.convs)
  variables, notes = import_vggish.import_vggish(sd, model, pca=_pca(16))
  for key in ("block3", "embedding"):
    jax.tree.map(np.testing.assert_array_equal, variables["params"][key], params[key])
  np.testing.assert_array_equal(variables["params"]["head"]["kernel"], np.eye(16))
  assert variables["batch_stats"]["pca_means"].shape == (16,) and "identity" in notes[0]
  _, out = jax.jit(lambda v, x: model.apply(v, x, train=False))(
      variables, np.zeros((1, 96, 64), np.float32))
  np.testing.assert_array_equal(out["logits"], out["embedding"])
  assert out["embedding_quantized"].dtype == jnp.uint8
  assert out["example_embeddings_pca"].shape == (1, 1, 16)

  with pytest.raises(UserError, match=r"lacks key 'features.8.weight' \(for block3/conv2"):
    import_vggish.import_vggish({k: v for k, v in sd.items() if k != "features.8.weight"}, model)
  bad = dict(sd, **{"embeddings.0.weight": np.zeros((32, 100), np.float32)})
  with pytest.raises(UserError, match=r"'embeddings.0.weight' has shape \(32, 100\).*needs "
                                      r"\(768, 32\)"):
    import_vggish.import_vggish(bad, model)
  with pytest.raises(UserError, match=r"unexpected key .*'pproc.pca_means' \(shape \(16,\)\)"):
    import_vggish.import_vggish(dict(sd, **{"pproc.pca_means": np.zeros(16)}), model)
  with pytest.raises(UserError, match=r"lack key 'pca_means' \(found: pca_eigen_vectors\)"):
    import_vggish.import_vggish(sd, model, pca={"pca_eigen_vectors": np.eye(16)})
  with pytest.raises(UserError, match=r"'pca_eigen_vectors' has shape \(128, 128\)"):
    import_vggish.import_vggish(sd, model, pca=_pca(128))
  with pytest.raises(UserError, match="num_classes must be 16"):
    import_vggish.import_vggish(sd, models.get_model("vggish:tiny", num_classes=3))
  with pytest.raises(UserError, match="does not exist"):
    import_vggish.read_pca("/nonexistent/pca.npz")


def test_import_stage_writes_an_embedding_checkpoint(tmp_path, capsys):
  from safetensors.numpy import save_file
  from audiotl_jax.train import inference
  model = models.get_model("vggish:tiny", num_classes=16)
  params = _variables(model)["params"]
  save_file({k: np.ascontiguousarray(v) for k, v in to_torchvggish(params, model.convs).items()},
            str(tmp_path / "vggish.safetensors"))
  pca = _pca(16)
  np.savez(tmp_path / "pca.npz", **pca)
  out = tmp_path / "imported"
  assert cli(["import", "--weights", str(tmp_path / "vggish.safetensors"), "--model",
              "vggish:tiny", "--pca", str(tmp_path / "pca.npz"), "--workdir", str(out)]) == 0
  assert "identity" in capsys.readouterr().out
  loaded, meta, _ = checkpointing.load_model(out)
  assert meta["frontend"]["kind"] == "vggish" and meta["num_classes"] == 16
  assert meta["norm"] == {"mean": 0.0, "std": 1.0} and meta["clip_seconds"] is None
  np.testing.assert_array_equal(loaded["batch_stats"]["pca_eigen_vectors"],
                                pca["pca_eigen_vectors"])
  # The checkpoint as `embed` runs it: int16 audio -> features -> post-processed layers.
  inf = inference.load_for_inference(out)
  audio = jnp.asarray(np.stack([_pcm(2.0, 0), _pcm(2.0, 1)]))
  _, layers = jax.jit(lambda v, a: inf.model.apply(v, inf.featurize(a), train=False))(
      inf.variables, audio)
  want_q, _ = _release_postprocess(np.asarray(layers["example_embeddings"][0], np.float64),
                                   pca["pca_eigen_vectors"], pca["pca_means"])
  assert np.abs(np.asarray(layers["example_embeddings_quantized"][0], np.int32) - want_q).max() <= 1
  # Fine-tuning starts from a fresh model: the weights carry over, the PCA and identity head not.
  ft = models.get_model("vggish:tiny", num_classes=4)
  fresh = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), models.param_shapes(ft, 96, 64))
  moved, left = transfer.transplant(loaded["params"], fresh["params"])
  assert sorted(left) == ["head/bias", "head/kernel"]
  np.testing.assert_array_equal(moved["block1"]["conv1"]["kernel"],
                                params["block1"]["conv1"]["kernel"])
  with pytest.raises(UserError, match="does not apply to AST"):
    cli(["import", "--weights", str(tmp_path / "vggish.safetensors"), "--model", "ast:tiny",
         "--pca", str(tmp_path / "pca.npz"), "--workdir", str(tmp_path / "o")])


@pytest.mark.slow
def test_finetune_and_embed_from_an_imported_vggish(tmp_path, prepared):
  """The point of importing: fine-tune (linear) and embed with VGGish's own frontend."""
  from safetensors.numpy import save_file
  from audiotl_jax import config as config_lib
  from audiotl_jax.stages import embed, finetune
  model = models.get_model("vggish:tiny", num_classes=16)
  params = _variables(model)["params"]
  save_file({k: np.ascontiguousarray(v) for k, v in to_torchvggish(params, model.convs).items()},
            str(tmp_path / "vggish.safetensors"))
  np.savez(tmp_path / "pca.npz", **_pca(16))
  src = tmp_path / "imported"
  assert cli(["import", "--weights", str(tmp_path / "vggish.safetensors"), "--model",
              "vggish:tiny", "--pca", str(tmp_path / "pca.npz"), "--workdir", str(src)]) == 0
  config = config_lib.load("configs/finetune.py:model=vggish:tiny,strategy=linear,runlocal")
  with config.unlocked():
    config.init = str(src)
    config.data.dir = str(prepared["speech_commands"])
    config.batch_size = 8
    config.total_steps = 2
    config.eval_every = 2
    config.progress = False
  results = finetune.run(config, tmp_path / "linear")
  after, meta, _ = checkpointing.load_model(tmp_path / "linear")
  assert meta["frontend"]["kind"] == "vggish"
  assert results["num_trainable"] == models.count_params(after["params"]["head"])
  np.testing.assert_array_equal(after["params"]["block2"]["conv1"]["kernel"],
                                params["block2"]["conv1"]["kernel"])  # linear: frozen
  written = embed.embed(checkpoint=src, dataset_dir=prepared["speech_commands"], splits=["test"],
                        layers=["embedding", "embedding_quantized", "example_embeddings:mean"],
                        pooling="mean", out_dir=tmp_path / "emb", batch_size=8, progress=False)
  q = np.load(tmp_path / "emb" / "test" / "embedding_quantized.npy")
  assert q.shape[1] == 16 and np.all((q >= 0) & (q <= 255)) and q.dtype == np.float32
  np.testing.assert_allclose(np.load(tmp_path / "emb" / "test" / "embedding.npy"),
                             np.load(tmp_path / "emb" / "test" / "example_embeddings_mean.npy"),
                             rtol=1e-6)
  assert written["test"]["frontend"]["kind"] == "vggish"
