"""The Python API: `api.load` on pre-trained, fine-tuned (adapter) and imported checkpoints gives
`embed`'s numbers; resampling, windows of long inputs, the compile cache, 1 vs 8 devices, and
one-line errors for bad inputs."""
import os
import subprocess
import sys

import numpy as np
import pytest

from audiotl_jax import api
from audiotl_jax.cli import main as cli
from audiotl_jax.data import records
from audiotl_jax.data.dataset import PreparedDataset
from audiotl_jax.errors import UserError
from audiotl_jax.stages import embed as embedding

LAYERS = ("embedding", "logits", "block3", "block3:max")


@pytest.fixture(scope="module")
def model(pretrained):
  return api.load(pretrained)


@pytest.fixture(scope="module")
def finetuned(prepared, pretrained, tmp_path_factory):
  """A 2-step conv_adapter fine-tuning from `pretrained`: a full checkpoint and `adapter/`."""
  from audiotl_jax import config as config_lib
  from audiotl_jax.stages import finetune
  config = config_lib.load("configs/finetune.py:strategy=conv_adapter:4,runlocal")
  with config.unlocked():
    config.init = str(pretrained)
    config.data.dir = str(prepared["speech_commands"])
    config.batch_size = 8
    config.total_steps = 2
    config.eval_every = 2
    config.progress = False
  workdir = tmp_path_factory.mktemp("finetune")
  finetune.run(config, workdir)
  assert (workdir / "adapter" / "adapter.json").exists()
  return workdir


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  """Random ast:tiny weights in the Hugging Face layout, through `audiotl import`."""
  from test_import_weights import FRAMES, _weights
  tmp = tmp_path_factory.mktemp("import")
  path, _ = _weights(tmp)
  assert cli(["import", "--weights", str(path), "--model", "ast:tiny", "--workdir",
              str(tmp / "ast"), "--frames", str(FRAMES)]) == 0
  return tmp / "ast"


def _clips(data_dir, split="test"):
  """A split's int16 records, each padded or cropped to 1 s as the eval pipeline does."""
  ds = PreparedDataset(data_dir)
  source = ds.source(split)
  audio = [records.decode(source[i])["audio"][:16000] for i in range(ds.num_records(split))]
  return np.stack([np.pad(a, (0, 16000 - len(a))) for a in audio])


def _embedded(checkpoint, data_dir, out_dir, layers):
  embedding.embed(checkpoint=checkpoint, dataset_dir=data_dir, splits=["test"], layers=layers,
                  pooling="mean", out_dir=out_dir, batch_size=8, progress=False)
  return {api.output_name(k): np.load(out_dir / "test" / f"{api.output_name(k)}.npy")
          for k in layers}


@pytest.mark.parametrize("which", ["pretrained", "finetuned", "imported"])
def test_outputs_equal_embeds_arrays(which, request, prepared, tmp_path):
  checkpoint = request.getfixturevalue(which)
  layers = ("embedding", "logits", "block3:max") if which == "imported" else LAYERS
  if which == "imported":
    layers += ("block12:patch_mean",)
  want = _embedded(checkpoint, prepared["speech_commands"], tmp_path / "emb", layers)
  model = api.load(checkpoint)
  pcm = _clips(prepared["speech_commands"])
  # Float input, as a user has it: int16 / 32768 -> prepare's rounding gives the records back.
  got = model(pcm.astype(np.float32) / 32768.0, 16000, layers=layers[2:])
  assert sorted(got) == sorted(want)
  for k in want:
    assert got[k].dtype == np.float32 and got[k].shape == want[k].shape, k
    np.testing.assert_allclose(got[k], want[k], atol=1e-5, rtol=1e-5, err_msg=k)
  as_pcm = model(pcm, 16000, layers=layers[2:], int16=True)
  for k in want:
    np.testing.assert_array_equal(as_pcm[k], got[k])


def test_adapter_folder_loads_on_its_backbone(finetuned, prepared):
  full, adapted = api.load(finetuned), api.load(finetuned / "adapter")
  assert adapted.metadata["strategy"].startswith("conv_adapter") and "adapter" in str(
      adapted.source)
  x = _clips(prepared["speech_commands"])[:5].astype(np.float32) / 32768.0
  a, b = full(x, 16000, layers=("block4",)), adapted(x, 16000, layers=("block4",))
  for k in a:
    np.testing.assert_allclose(a[k], b[k], atol=1e-6, err_msg=k)


def _tones(sr, seconds=1.0):
  t = np.arange(int(seconds * sr)) / sr
  x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1500 * t + 0.3)
  return (x * np.hanning(len(t)) + 0.05 * np.sin(2 * np.pi * 3000 * t))[None].astype(np.float32)


def test_other_sample_rates_are_resampled_as_prepare_does(model):
  import soxr
  x32 = np.concatenate([_tones(32000), 0.5 * _tones(32000)])
  got = model(x32, 32000)
  # Exactly soxr HQ, as prepare resamples...
  same = model(soxr.resample(x32.T, 32000, 16000, quality="HQ").T, 16000)
  for k in got:
    np.testing.assert_array_equal(got[k], same[k])
  # ...and the same sound sampled at 16 kHz gives the same outputs up to the resampler's error.
  ref = model(np.concatenate([_tones(16000), 0.5 * _tones(16000)]), 16000)
  for k in got:
    np.testing.assert_allclose(got[k], ref[k], rtol=0.02, atol=0.02 * np.abs(ref[k]).max(),
                               err_msg=k)
  assert model(_tones(8000), 8000)["embedding"].shape == (1, ref["embedding"].shape[1])


def test_long_inputs_average_their_windows_short_ones_are_padded(model):
  rng = np.random.default_rng(0)
  x = (0.1 * rng.standard_normal((2, 40000))).astype(np.float32)   # 2.5 clips
  got = model(x, 16000, layers=("block2:max",))
  parts = [model(x[:, s:s + 16000], 16000, layers=("block2:max",)) for s in (0, 16000, 24000)]
  for k in got:
    np.testing.assert_allclose(got[k], np.mean([p[k] for p in parts], axis=0), atol=1e-5,
                               err_msg=k)
  short = model(x[:, :8000], 16000)
  padded = model(np.pad(x[:, :8000], ((0, 0), (0, 8000))), 16000)
  for k in short:
    np.testing.assert_array_equal(short[k], padded[k])


def test_compiled_functions_are_cached_per_shape(model):
  x = (0.1 * np.random.default_rng(1).standard_normal((5, 16000))).astype(np.float32)
  model(x, 16000)
  before = len(model._compiled)  # pylint: disable=protected-access
  model(x[:3], 16000)   # 3 and 5 rows share the bucket of 8 (a multiple of the 8 devices)
  model(x, 16000)
  assert len(model._compiled) == before  # pylint: disable=protected-access


def test_one_device_gives_the_numbers_of_eight(model, pretrained, tmp_path):
  x = (0.1 * np.random.default_rng(2).standard_normal((3, 24000))).astype(np.float32)
  np.save(tmp_path / "x.npy", x)
  code = ("import sys, jax, numpy as np; from audiotl_jax import api; "
          "m = api.load(sys.argv[1]); out = m(np.load(sys.argv[2]), 16000, layers=('block3',)); "
          "np.savez(sys.argv[3], **out); print(jax.device_count(), m.mesh.devices.size)")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1",
             JAX_PLATFORMS="cpu")
  run = subprocess.run([sys.executable, "-c", code, str(pretrained), str(tmp_path / "x.npy"),
                        str(tmp_path / "one.npz")], env=env, capture_output=True, text=True,
                       timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  assert run.stdout.split() == ["1", "1"]
  assert model.mesh.devices.size == 8
  one = np.load(tmp_path / "one.npz")
  eight = model(x, 16000, layers=("block3",))
  for k in eight:
    np.testing.assert_allclose(one[k], eight[k], atol=1e-5, rtol=1e-5, err_msg=k)


GOOD = np.zeros((2, 16000), np.float32)
NAN = GOOD.copy()
NAN[1, 5] = np.nan
INF = GOOD.copy()
INF[0, 0] = np.inf


@pytest.mark.parametrize("args, kwargs, match", [
    ((GOOD[0], 16000), {}, "2-D .* x\\[None\\]"),
    ((GOOD[None], 16000), {}, "2-D"),
    ((GOOD.astype(np.int16), 16000), {}, "int16=True"),
    ((GOOD.astype(np.int32), 16000), {}, "integer dtype int32"),
    ((GOOD, 16000), {"int16": True}, "int16=True but .* float32"),
    ((GOOD > 0, 16000), {}, "float"),
    ((GOOD[:0], 16000), {}, "empty"),
    ((GOOD[:, :0], 16000), {}, "empty"),
    ((NAN, 16000), {}, "1 non-finite samples .* rows 1"),
    ((INF, 16000), {}, "non-finite"),
    ((GOOD, 0), {}, "sample_rate"),
    ((GOOD, 16000.5), {}, "sample_rate"),
    ((GOOD, "16k"), {}, "sample_rate"),
    ((GOOD, True), {}, "sample_rate"),
    ((GOOD, 16000), {"layers": ("block9",)}, "unknown layer of cnn:tiny 'block9'"),
    ((GOOD, 16000), {"layers": ("embedding:max",)}, "pooling 'max' does not apply"),
    ((GOOD, 16000), {"pooling": "median"}, "unknown pooling"),
])
def test_bad_inputs_are_one_line_user_errors(model, args, kwargs, match):
  with pytest.raises(UserError, match=match) as e:
    model(*args, **kwargs)
  assert "\n" not in str(e.value)


def test_bad_paths_and_options_are_user_errors(model, pretrained, tmp_path):
  with pytest.raises(UserError, match="does not exist"):
    api.load(tmp_path / "missing")
  with pytest.raises(UserError, match="batch_size"):
    api.load(pretrained, batch_size=0)
  with pytest.raises(UserError, match="hop_seconds"):
    model.frames(GOOD, 16000, layer="embedding", hop_seconds=-1.0)


def test_the_embedding_bench_times_the_api(tmp_path, monkeypatch):
  from audiotl_jax.bench import embedding as bench
  monkeypatch.setenv("AUDIOTL_BENCH_MODELS", "cnn:tiny,vggish:tiny")
  rows = bench.bench_embedding(tmp_path, quick=True)
  assert [r["model"] for r in rows] == ["cnn:tiny", "vggish:tiny"]
  assert all(r["clips_per_s"] > 0 and r["embedding_dim"] > 0 for r in rows)
  monkeypatch.setenv("AUDIOTL_BENCH_MODELS", "cnn:tiny,nope")
  with pytest.raises(UserError, match="unknown model 'nope'"):
    bench.bench_embedding(tmp_path, quick=True)
