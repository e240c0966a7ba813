"""Fine-tuning checks its names and paths before writing anything (issue 10, items 18 and 21)."""
import json

import pytest

from audiotl_jax.errors import UserError
from conftest import set_keys


def _config(prepared, **overrides):
  from audiotl_jax import config as config_lib
  config = config_lib.load("configs/finetune.py:model=cnn:tiny,runlocal")
  with config.unlocked():
    config.data.dir = str(prepared["speech_commands"])
    config.frontend.n_mels = 32
    config.progress = False
    set_keys(config, overrides)
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


def test_clips_longer_than_the_crop_are_counted_once(tmp_path, capsys):
  """Issue 10, item 20: cropping at fine-tuning used to be silent."""
  import numpy as np
  import soundfile as sf
  from audiotl_jax.data import readers, shard_writer
  from audiotl_jax.stages import finetune
  rows = []
  for i in range(12):
    seconds = 2.0 if i % 3 == 0 else 0.5  # 4 long clips, 3 of them in train
    sf.write(tmp_path / f"c{i}.wav", np.full(int(16000 * seconds), 100 * (i % 2 + 1), np.int16),
             16000)
    rows.append(f"c{i}.wav,{'ab'[i % 2]},{'train' if i < 9 else 'test'}")
  (tmp_path / "l.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
  shard_writer.prepare(readers.csv_manifest(tmp_path / "l.csv"), tmp_path / "data",
                       clip_seconds=None, num_workers=1, progress=False)
  config = _config({"speech_commands": tmp_path / "data"}, strategy="linear", total_steps=1,
                   eval_every=1, batch_size=8, **{"data.clip_seconds": 1.0,
                                                  "data.val_split": "validation"})
  capsys.readouterr()
  finetune.run(config, tmp_path / "run")
  out = capsys.readouterr().out
  lines = [line for line in out.splitlines() if "longer than config key 'data.clip_seconds'" in line]
  assert len(lines) >= 1 and all("cropped to its start" in line for line in lines)
  assert sum(int(line.split()[1]) for line in lines) == 4
