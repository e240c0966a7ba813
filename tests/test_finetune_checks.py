"""Fine-tuning checks its names and paths before writing anything (issue 10, items 18 and 21)."""
import json

import pytest

from audiotl_jax.errors import UserError


def _config(prepared, **overrides):
  from audiotl_jax import config as config_lib
  config = config_lib.load("configs/finetune.py:model=cnn:tiny,runlocal")
  with config.unlocked():
    config.data.dir = str(prepared["speech_commands"])
    config.frontend.n_mels = 32
    config.progress = False
    for key, value in overrides.items():
      node = config
      *parents, leaf = key.split(".")
      for p in parents:
        node = node[p]
      node[leaf] = value
  return config


@pytest.mark.parametrize("overrides, message", [
    ({"strategy": "frobnicate"}, "known: bitfit"),
    ({"strategy": "lora"}, "not supported for model family 'cnn'"),
    ({"model.name": "cnnn:tiny"}, "unknown model"),
])
def test_bad_names_fail_before_any_file_is_written(prepared, tmp_path, overrides, message):
  from audiotl_jax.stages import finetune
  with pytest.raises(UserError, match=message):
    finetune.run(_config(prepared, **overrides), tmp_path / "run")
  assert not (tmp_path / "run").exists()


def test_init_pointing_at_a_file_is_a_one_line_error(prepared, pretrained, tmp_path):
  from audiotl_jax.stages import finetune
  with pytest.raises(UserError, match="is a file"):
    finetune.run(_config(prepared, init=str(pretrained / "config.json")), tmp_path / "run")
  assert not (tmp_path / "run").exists()


def test_config_records_the_checkpoint_model_not_the_requested_one(prepared, pretrained,
                                                                   tmp_path):
  from audiotl_jax.stages import finetune
  config = _config(prepared, init=str(pretrained), **{"model.name": "crnn:tiny",
                                                      "total_steps": 2, "eval_every": 2})
  results = finetune.run(config, tmp_path)
  saved = json.loads((tmp_path / "config.json").read_text())
  assert results["model"] == saved["model"]["name"] == "cnn:tiny"
