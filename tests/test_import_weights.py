"""`audiotl import`: a Hugging Face / official AST file -> a checkpoint the other stages start from.

The weights are random ones written in the real file formats (safetensors, Hugging Face key
names; an official-layout state dict), for the real ast:tiny variant."""
import json

import jax
import numpy as np
import pytest

from audiotl_jax import models
from audiotl_jax.errors import UserError
from audiotl_jax.cli import main as cli
from audiotl_jax.train import checkpoints as checkpointing
from test_importers import _random_params, to_huggingface, to_official

FRAMES, BINS = 64, 128


def _weights(tmp_path, num_classes=527, head=True, layout="huggingface"):
  from safetensors.numpy import save_file
  model = models.get_model("ast:tiny", num_classes=num_classes)
  params = _random_params(models.param_shapes(model, frames=FRAMES, mel_bins=BINS)["params"])
  sd = to_huggingface(params) if layout == "huggingface" else to_official(params)
  if not head:
    sd = {k: v for k, v in sd.items() if not k.startswith(("classifier.", "module.mlp_head."))}
  path = tmp_path / f"ast_{layout}.safetensors"
  save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, str(path))
  return path, params


def _equal(a, b):
  fa, fb = (jax.tree_util.tree_flatten_with_path(x)[0] for x in (a, b))
  assert [p for p, _ in fa] == [p for p, _ in fb]
  for (path, x), (_, y) in zip(fa, fb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(path))


@pytest.mark.parametrize("layout", ["huggingface", "official"])
def test_import_writes_a_checkpoint_that_loads_as_converted(tmp_path, capsys, layout):
  path, params = _weights(tmp_path, layout=layout)
  out = tmp_path / "imported"
  assert cli(["import", "--weights", str(path), "--model", "ast:tiny", "--workdir", str(out),
              "--frames", str(FRAMES)]) == 0
  assert f"--config.init={out}" in capsys.readouterr().out
  loaded, meta, step_dir = checkpointing.load_model(out)
  assert step_dir.name == "0"
  _equal(loaded["params"], params)  # every weight, the AudioSet head included
  assert meta["model"] == "ast:tiny" and meta["num_classes"] == 527
  assert meta["classes"][0] == {"id": "/m/09x0r", "name": "Speech"}
  assert meta["frontend"]["kind"] == "fbank" and meta["frontend"]["target_frames"] == FRAMES
  assert meta["norm"] == {"mean": pytest.approx(-4.2677393), "std": pytest.approx(4.5689974)}
  assert meta["num_params"] == models.count_params(params) and "its own" in meta["selection"]
  results = json.loads((out / "results.json").read_text())
  assert checkpointing.finished(out) == results and results["stage"] == "import"
  # A second import into the same workdir is a finished run: nothing is rewritten.
  mtime = (out / "checkpoints/0").stat().st_mtime_ns
  assert cli(["import", "--weights", str(path), "--model", "ast:tiny", "--workdir",
              str(out)]) == 0
  assert "already holds a finished run" in capsys.readouterr().out
  assert (out / "checkpoints/0").stat().st_mtime_ns == mtime
  # Killed after the checkpoint, before results.json: the next run imports again, not crashes.
  (out / "results.json").unlink()
  assert cli(["import", "--weights", str(path), "--model", "ast:tiny", "--workdir", str(out),
              "--frames", str(FRAMES)]) == 0
  _equal(checkpointing.load_model(out)[0]["params"], params)


def test_encoder_only_weights_get_a_fresh_head(tmp_path):
  path, params = _weights(tmp_path, head=False)
  out = tmp_path / "imported"
  assert cli(["import", "--weights", str(path), "--model", "ast:tiny", "--workdir", str(out),
              "--frames", str(FRAMES)]) == 0
  loaded, meta, _ = checkpointing.load_model(out)
  _equal({k: v for k, v in loaded["params"].items() if k != "head"},
         {k: v for k, v in params.items() if k != "head"})
  assert "a fresh 527-class head" in meta["selection"]


def test_import_errors_name_the_problem(tmp_path):
  from safetensors.numpy import save_file
  with pytest.raises(UserError, match="does not exist"):
    cli(["import", "--weights", str(tmp_path / "none.pth"), "--workdir", str(tmp_path / "o")])
  with pytest.raises(UserError, match="must be an AST variant"):
    cli(["import", "--weights", str(tmp_path / "none.pth"), "--model", "cnn:S",
         "--workdir", str(tmp_path / "o")])
  save_file({"conv.weight": np.zeros((2, 2), np.float32)}, str(tmp_path / "cnn.safetensors"))
  (tmp_path / "torn.safetensors").write_bytes(b"garbage" * 100)
  with pytest.raises(UserError, match="torn.safetensors: not a readable safetensors file"):
    cli(["import", "--weights", str(tmp_path / "torn.safetensors"), "--model", "ast:tiny",
         "--workdir", str(tmp_path / "o")])
  with pytest.raises(UserError, match="is a directory"):
    cli(["import", "--weights", str(tmp_path), "--model", "ast:tiny", "--workdir",
         str(tmp_path / "o")])
  with pytest.raises(UserError, match="not an AST state dict"):
    cli(["import", "--weights", str(tmp_path / "cnn.safetensors"), "--model", "ast:tiny",
         "--workdir", str(tmp_path / "o")])
  path, _ = _weights(tmp_path)  # made for ast:tiny; ast:small is wider
  with pytest.raises(UserError, match="shape"):
    cli(["import", "--weights", str(path), "--model", "ast:small", "--workdir",
         str(tmp_path / "o"), "--frames", str(FRAMES)])


@pytest.mark.slow
def test_lora_finetune_from_an_imported_checkpoint(tmp_path, prepared):
  """The point of importing: LoRA fine-tuning starts from the imported weights and frontend."""
  from audiotl_jax import config as config_lib
  from audiotl_jax.stages import finetune
  path, params = _weights(tmp_path)
  out = tmp_path / "imported"
  assert cli(["import", "--weights", str(path), "--model", "ast:tiny", "--workdir", str(out),
              "--frames", str(FRAMES)]) == 0
  config = config_lib.load("configs/finetune.py:model=ast:tiny,strategy=lora,runlocal")
  with config.unlocked():
    config.init = str(out)
    config.data.dir = str(prepared["speech_commands"])
    config.batch_size = 8
    config.total_steps = 2
    config.eval_every = 2
    config.progress = False
  results = finetune.run(config, tmp_path / "lora")
  after, meta, _ = checkpointing.load_model(tmp_path / "lora")
  assert meta["frontend"]["target_frames"] == FRAMES  # the frontend came with the weights
  frozen = jax.tree.leaves(params["embedding"])
  for a, b in zip(frozen, jax.tree.leaves(after["params"]["embedding"])):
    np.testing.assert_array_equal(a, b)  # LoRA leaves the backbone as imported
  assert results["num_trainable"] < results["num_params"] // 10
