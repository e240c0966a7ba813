"""PANNs without torch: parameter counts, the torchlibrosa frontend against librosa, a tiny
model's forward pass, transfer strategies, and the importer on numpy state dicts.

Parity with the official PyTorch modules, through `.pth` files and `audiotl import`, is in
tests/torch_parity/test_panns_parity.py (`make test-torch`).
"""
import jax
import jax.numpy as jnp
import librosa
import ml_collections
import numpy as np
import pytest

from audiotl_jax import cli, models
from audiotl_jax.errors import UserError
from audiotl_jax.features import featurizer
from audiotl_jax.features import panns as frontend
from audiotl_jax.models import import_panns
from audiotl_jax.models import transfer

COUNTS_527 = {"panns:cnn6": 4_837_455, "panns:cnn10": 5_219_279,
              "panns:cnn10_autrainer": 5_219_279, "panns:cnn14": 80_753_615,
              "panns:cnn14_16k": 80_753_615}


def _fcfg(setup):
  return ml_collections.ConfigDict(dict(kind="panns", **frontend.SETUPS[setup]))


@pytest.mark.parametrize("name,count", COUNTS_527.items())
def test_parameter_counts_at_527_classes(name, count):
  shapes = models.param_shapes(models.get_model(name, num_classes=527))
  assert models.count_params(shapes["params"]) == count


def test_models_command_lists_the_counts(capsys):
  cli.main(["models", "--num-classes", "527"])
  rows = dict(line.split() for line in capsys.readouterr().out.splitlines())
  assert {k: int(rows[k].replace(",", "")) for k in COUNTS_527} == COUNTS_527


@pytest.mark.parametrize("setup,samples,frames", [("16k", 160_000, 1001), ("32k", 320_000, 1001),
                                                  ("16k", 16_123, 101)])
def test_frame_counts(setup, samples, frames):
  assert featurizer.feature_frames(_fcfg(setup), samples) == frames
  assert frontend.num_frames(samples, frontend.SETUPS[setup]["hop_length"]) == frames


@pytest.mark.parametrize("setup", sorted(frontend.SETUPS))
def test_frontend_matches_librosa(setup):
  """The featurizer's `panns` kind, from int16, against librosa with reflect padding."""
  s = frontend.SETUPS[setup]
  rng = np.random.default_rng(0)
  audio = (rng.standard_normal((2, s["sample_rate"] // 4 + 37)) * 3000).astype(np.int16)
  audio[1, :200] = 0  # silence reaches the 1e-10 floor (-100 dB)
  got = np.asarray(jax.jit(featurizer.make_featurizer(_fcfg(setup), None))(jnp.asarray(audio)))
  y = audio.astype(np.float64) / 32767.0
  power = np.abs(librosa.stft(y, n_fft=s["n_fft"], hop_length=s["hop_length"], center=True,
                              pad_mode="reflect", window="hann")) ** 2
  bank = librosa.filters.mel(sr=s["sample_rate"], n_fft=s["n_fft"], n_mels=s["n_mels"],
                             fmin=s["fmin"], fmax=s["fmax"], dtype=np.float64)
  ref = 10 * np.log10(np.maximum(np.einsum("mf,bft->btm", bank, power), 1e-10))
  assert got.shape == ref.shape == (2, frontend.num_frames(audio.shape[1], s["hop_length"]), 64)
  np.testing.assert_allclose(got, ref, atol=1e-3)
  # No dataset normalisation: bn0 does it, so statistics handed over are ignored.
  normed = jax.jit(featurizer.make_featurizer(_fcfg(setup), {"mean": -30.0, "std": 10.0}))
  np.testing.assert_array_equal(np.asarray(normed(jnp.asarray(audio))), got)


def test_buffers_match_torchlibrosa_construction():
  # torchlibrosa builds the STFT kernels from a DFT matrix times the window; ours from cos/sin.
  n = 512
  w = librosa.filters.get_window("hann", n, fftbins=True)
  dft = np.exp(-2j * np.pi * np.outer(np.arange(n // 2 + 1), np.arange(n)) / n) * w
  real, imag = frontend.stft_kernels(n)
  np.testing.assert_allclose(real[:, 0], dft.real, atol=1e-9)
  np.testing.assert_allclose(imag[:, 0], dft.imag, atol=1e-9)


def test_tiny_forward_jitted():
  model = models.get_model("panns:tiny", num_classes=5)
  x = jax.random.normal(jax.random.key(0), (3, 101, 64))
  variables = jax.jit(lambda x: model.init(jax.random.key(1), x, train=False))(x)
  assert set(variables["params"]) == {"bn0", "block1", "block2", "block3", "block4", "embedding",
                                      "head"}
  assert variables["params"]["block1"]["conv1"]["kernel"].shape == (3, 3, 1, 8)
  assert variables["batch_stats"]["bn0"]["mean"].shape == (64,)

  @jax.jit
  def run(variables, x, key):
    train, updates = model.apply(variables, x, train=True, mutable=["batch_stats"],
                                 rngs={"dropout": key})
    return train, updates, model.apply(variables, x, train=False)

  (train_logits, _), updates, (logits, out) = run(variables, x, jax.random.key(2))
  assert logits.shape == (3, 5) and logits.dtype == jnp.float32
  # PyTorch's floor pooling: 101 -> 50 -> 25 -> 12 -> 6 frames, 64 -> 4 mel bins.
  assert out["block4"].shape == (3, 6, 4, 32)
  assert out["pooled"].shape == out["embedding"].shape == (3, model.embedding_dim)
  assert np.all(np.asarray(out["embedding"]) >= 0)  # fc1 + ReLU
  np.testing.assert_array_equal(out["logits"], logits)
  assert not np.allclose(train_logits, logits)  # dropout and batch statistics in train mode
  assert not np.allclose(updates["batch_stats"]["bn0"]["mean"], 0.0)
  # A clip shorter than the pooling never empties an axis.
  short, _ = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x[:, :5])
  assert short.shape == (3, 5) and np.all(np.isfinite(short))


def test_variants():
  cnn6 = models.get_model("panns:cnn6", num_classes=3)
  assert (cnn6.convs, cnn6.kernel_size, len(cnn6.block_names())) == (1, 5, 4)
  cnn14 = models.get_model("panns:cnn14", num_classes=3)
  assert (len(cnn14.block_names()), cnn14.pool_last, cnn14.embedding_dim) == (6, False, 2048)
  assert models.get_model("panns", num_classes=3) == cnn14
  assert models.get_model("panns:cnn14_16k", num_classes=3).frontend_setup == "16k"
  autrainer = models.get_model("panns:cnn10_autrainer", num_classes=3)
  assert (autrainer.fc_dropout, autrainer.block_dropout) == (0.0, 0.2)
  assert models.get_model("panns:cnn10", num_classes=3).fc_dropout == 0.5


def _trainable_tops(spec, name="panns:tiny"):
  model, ctx = transfer.model_for(spec, name, num_classes=4)
  shapes = models.param_shapes(model, frames=64, mel_bins=64)
  s = transfer.make_strategy(spec, shapes["params"], shapes["batch_stats"], model.block_names(),
                             family=ctx["family"], width=ctx["width"], stem=ctx["stem"])
  flat = jax.tree_util.tree_flatten_with_path(s.trainable)[0]
  tops = {}
  for path, t in flat:
    tops.setdefault(transfer.path_str(path).split("/")[0], set()).add(bool(t))
  stats = {transfer.path_str(p).split("/")[0]: bool(t)
           for p, t in jax.tree_util.tree_flatten_with_path(s.stats_trainable)[0]}
  return model, s, shapes, tops, stats


def test_partial_freezes_bn0_with_the_first_blocks():
  _, s, _, tops, stats = _trainable_tops("partial:2")
  assert tops["bn0"] == tops["block1"] == tops["block2"] == {False}
  assert tops["block3"] == tops["block4"] == tops["embedding"] == tops["head"] == {True}
  assert s.model_train and not stats["bn0"] and not stats["block2"] and stats["block3"]
  _, _, _, tops, _ = _trainable_tops("partial:0")
  assert all(v == {True} for v in tops.values())
  with pytest.raises(UserError, match="has 6 blocks"):
    _trainable_tops("partial:7", "panns:cnn14")


def test_linear_bitfit_mlp_and_conv_adapter():
  _, s, shapes, tops, _ = _trainable_tops("linear")
  assert not s.model_train and tops.pop("head") == {True}
  assert all(v == {False} for v in tops.values())
  assert transfer.count_trainable(shapes["params"], s.trainable) == 32 * 4 + 4
  _, s, shapes, tops, _ = _trainable_tops("bitfit")
  assert tops["bn0"] == {True, False}  # its shift trains, its scale does not
  _, s, shapes, tops, _ = _trainable_tops("mlp:16")
  assert shapes["params"]["head"]["hidden"]["kernel"].shape == (32, 16)
  assert not s.model_train and tops["head"] == {True} and tops["block4"] == {False}
  model, s, shapes, tops, _ = _trainable_tops("conv_adapter:4")
  adapter = shapes["params"]["block2"]["adapter"]
  assert tops["block2"] == {True, False} and adapter
  logits, _ = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), shapes,
                             jax.ShapeDtypeStruct((2, 64, 64), jnp.float32))
  assert logits.shape == (2, 4)


# ------------------------------------------------------------------ the importer, no torch
def to_official(variables, setup="16k", buffers=True) -> dict:
  """Our variables -> the official state dict (PyTorch layouts, num_batches_tracked, buffers)."""
  sd = {}
  for collection, tree in variables.items():
    flat = {"/".join(str(k.key) for k in p): np.asarray(v)
            for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
    for path, v in flat.items():
      if path.endswith("kernel"):
        v = v.transpose(3, 2, 0, 1) if v.ndim == 4 else v.T
      sd[import_panns.official_key(collection, path)] = np.ascontiguousarray(v)
  for key in [k for k in sd if k.endswith(".running_mean")]:
    sd[key.replace("running_mean", "num_batches_tracked")] = np.array(1000, np.int64)
  if buffers:
    s = frontend.SETUPS[setup]
    real, imag = frontend.stft_kernels(s["n_fft"])
    sd["spectrogram_extractor.stft.conv_real.weight"] = real.astype(np.float32)
    sd["spectrogram_extractor.stft.conv_imag.weight"] = imag.astype(np.float32)
    sd["logmel_extractor.melW"] = librosa.filters.mel(
        sr=s["sample_rate"], n_fft=s["n_fft"], n_mels=64, fmin=s["fmin"], fmax=s["fmax"]).T
  return sd


def _random_variables(model, seed=0):
  shapes = models.param_shapes(model, frames=64, mel_bins=64)
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.uniform(0.5, 1.5, s.shape).astype(np.float32), shapes)


def _convert(sd, name="panns:tiny", **overrides):
  model = models.get_model(name, num_classes=5, **overrides)
  shapes = models.param_shapes(model, frames=64, mel_bins=64)
  return import_panns.convert(sd, shapes, model_name=name, blocks=model.block_names(),
                              setup=model.frontend_setup)


@pytest.mark.parametrize("overrides", [{}, {"convs": 1, "kernel_size": 5}])
def test_round_trip(overrides):
  model = models.get_model("panns:tiny", num_classes=5, **overrides)
  variables = _random_variables(model)
  sd = to_official(variables)
  assert sd["conv_block1.conv1.weight"].shape == (8, 1, model.kernel_size, model.kernel_size)
  assert sd["fc1.weight"].shape == (32, 32) and sd["fc_audioset.weight"].shape == (5, 32)
  got, notes = _convert(sd, **overrides)
  assert notes == []
  for a, b in zip(jax.tree_util.tree_leaves_with_path(got),
                  jax.tree_util.tree_leaves_with_path(variables)):
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])
  if not overrides:  # the whole import of a state dict: the head's classes and the set-up
    imported = import_panns.import_panns(sd, "panns:tiny")
    assert imported.num_classes == 5 and imported.frames == 1001
    assert imported.frontend == {"kind": "panns", **frontend.SETUPS["16k"]}


def test_full_size_key_names():
  """Every official key of Cnn6 and Cnn10 maps (shapes only: nothing allocated)."""
  for name, first in (("panns:cnn6", (64, 1, 5, 5)), ("panns:cnn10", (64, 1, 3, 3))):
    model = models.get_model(name, num_classes=527)
    shapes = models.param_shapes(model)
    zeros = jax.tree.map(lambda s: np.broadcast_to(np.float32(0), s.shape), shapes)
    sd = to_official(zeros, setup="32k")
    assert sd["conv_block1.conv1.weight"].shape == first
    assert sd["fc_audioset.weight"].shape == (527, 512) and "bn0.running_var" in sd
    assert ("conv_block4.conv2.weight" in sd) == (name == "panns:cnn10")
    got, notes = import_panns.convert(sd, shapes, model_name=name, blocks=model.block_names(),
                                      setup="32k")
    assert notes == [] and models.count_params(got["params"]) == COUNTS_527[name]


def test_errors_name_the_first_wrong_key():
  model = models.get_model("panns:tiny", num_classes=5)
  sd = to_official(_random_variables(model))
  missing = {k: v for k, v in sd.items() if k != "conv_block2.bn1.running_var"}
  with pytest.raises(UserError, match=r"lacks key 'conv_block2.bn1.running_var' \(shape \(16,\)\)"):
    _convert(missing)
  bad = dict(sd, **{"conv_block3.conv2.weight": np.zeros((32, 32, 5, 5), np.float32)})
  with pytest.raises(UserError, match=r"'conv_block3.conv2.weight' has shape \(32, 32, 5, 5\), "
                                      r"panns:tiny needs \(32, 32, 3, 3\)"):
    _convert(bad)
  extra = dict(sd, **{"conv_block5.conv1.weight": np.zeros((64, 32, 3, 3), np.float32)})
  with pytest.raises(UserError, match="'conv_block5.conv1.weight'.*panns:tiny lacks"):
    _convert(extra)
  with pytest.raises(UserError, match="lacks key 'fc_audioset.weight'"):
    import_panns.import_panns({k: v for k, v in sd.items() if "fc_audioset" not in k},
                              "panns:tiny")


def test_wrong_setup_says_which_the_file_is():
  model = models.get_model("panns:tiny", num_classes=5)
  sd = to_official(_random_variables(model), setup="32k")
  with pytest.raises(UserError, match=r"is for the 32 kHz set-up \(window 1024, hop 320, 64 "
                                      r"mels, 50-14000 Hz\), but panns:tiny is the 16 kHz"):
    _convert(sd)
  cnn10 = to_official(_random_variables(models.get_model("panns:cnn10", num_classes=5)),
                      setup="16k")
  with pytest.raises(UserError, match="is for the 16 kHz set-up.*import it as panns:cnn14_16k"):
    _convert(cnn10, "panns:cnn10")
  odd = dict(sd, **{"logmel_extractor.melW": np.ones((129, 64), np.float32)})
  odd.pop("spectrogram_extractor.stft.conv_real.weight")
  odd.pop("spectrogram_extractor.stft.conv_imag.weight")
  with pytest.raises(UserError, match=r"'logmel_extractor.melW' \(shape \(129, 64\)\) matches no"):
    _convert(odd)
  _, notes = _convert(to_official(_random_variables(model), buffers=False))
  assert "not checked" in notes[0]
