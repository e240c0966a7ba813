"""Resuming under another config (issue 10, item 15): refused unless allowed, history kept."""
import json

import pytest

from audiotl_jax.errors import UserError
from conftest import tiny_pretrain_config


def test_resume_with_a_result_changing_key_is_refused_then_allowed(prepared, tmp_path):
  from audiotl_jax.stages import pretrain
  data = prepared["audioset"]
  assert pretrain.run(tiny_pretrain_config(data, stop_at=2), tmp_path) == {"stopped_at": 2}
  saved = (tmp_path / "config.json").read_text()

  with pytest.raises(UserError, match=r"optim\.lr.*allow_changes"):
    pretrain.run(tiny_pretrain_config(data, **{"optim.lr": 0.5}), tmp_path)
  assert (tmp_path / "config.json").read_text() == saved  # not overwritten by the refused run

  out = pretrain.run(tiny_pretrain_config(data, allow_changes=True, **{"optim.lr": 0.5}),
                     tmp_path)
  assert out["best_step"] is not None
  assert json.loads((tmp_path / "config.json").read_text())["optim"]["lr"] == 0.5
  history = sorted((tmp_path / "config_history").glob("config.*.json"))
  assert [p.read_text() for p in history] == [saved]


def test_resume_may_change_what_only_watches_the_run(prepared, tmp_path):
  from audiotl_jax.stages import pretrain
  data = prepared["audioset"]
  pretrain.run(tiny_pretrain_config(data, stop_at=2), tmp_path)
  out = pretrain.run(tiny_pretrain_config(data, log_every=2, keep_checkpoints=3), tmp_path)
  assert out["total_steps"] == 4 and not (tmp_path / "config_history").exists()


def test_a_run_started_before_a_new_option_existed_still_resumes(prepared, tmp_path):
  """A key the saved config lacks is an option added since, not a change."""
  from audiotl_jax.stages import pretrain
  data = prepared["audioset"]
  pretrain.run(tiny_pretrain_config(data, stop_at=2), tmp_path)
  saved = json.loads((tmp_path / "config.json").read_text())
  del saved["data"]["max_val_clips"]  # as an older audiotl wrote it
  (tmp_path / "config.json").write_text(json.dumps(saved))
  out = pretrain.run(tiny_pretrain_config(data), tmp_path)
  assert out["total_steps"] == 4
