"""A damaged checkpoint (an item folder gone, an array file cut short or emptied) never stops or
hangs a run: resuming falls back to the newest intact step with a one-line warning, and so does
loading the model of a workdir; a damaged step folder named explicitly is a one-line error.
"""
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from audiotl_jax.errors import UserError
from audiotl_jax.train import checkpoints, metrics
from conftest import tiny_pretrain_config

TOTAL, STOP = 6, 4  # saves at every step, the latest 3 kept: steps 2, 3, 4 when stopped


@pytest.fixture(scope="module")
def stopped(prepared, tmp_path_factory):
  from audiotl_jax.stages import pretrain
  workdir = tmp_path_factory.mktemp("stopped") / "run"
  assert pretrain.run(_config(prepared, stop_at=STOP), workdir) == {"stopped_at": STOP}
  assert checkpoints.finished_steps(workdir / "checkpoints") == [2, 3, 4]
  return workdir


def _config(prepared, **overrides):
  return tiny_pretrain_config(prepared["audioset"], total_steps=TOTAL, checkpoint_every=1,
                              keep_checkpoints=3, **overrides)


def _largest_file(folder: Path) -> Path:
  return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _truncate_half(path: Path):
  with path.open("r+b") as f:
    f.truncate(path.stat().st_size // 2)


DAMAGE = {
    "train folder deleted": lambda step: shutil.rmtree(step / "train"),
    "model file truncated": lambda step: _truncate_half(_largest_file(step / "model")),
    "model file emptied": lambda step: _largest_file(step / "model").write_bytes(b""),
    "model metadata emptied": lambda step: (step / "model" / "_METADATA").write_bytes(b""),
}


def _warnings(text: str) -> list[str]:
  return [line for line in text.splitlines() if "damaged" in line]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_resume_falls_back_to_the_newest_intact_step(prepared, stopped, tmp_path, capsys, damage):
  from audiotl_jax.stages import pretrain
  workdir = tmp_path / "run"
  shutil.copytree(stopped, workdir)
  DAMAGE[damage](workdir / "checkpoints" / str(STOP))
  results = pretrain.run(_config(prepared), workdir)
  out = capsys.readouterr()
  warned = _warnings(out.out + out.err)
  assert len(warned) == 1 and f"step {STOP}" in warned[0], out
  assert "resuming from step 3" in out.out
  assert results["total_steps"] == TOTAL and (workdir / "results.json").exists()
  assert checkpoints.finished_steps(workdir / "checkpoints")[-1] == TOTAL
  # Resumed from step 3's state and data position: step 4 again gives the loss it gave before.
  losses = [r["train_loss"] for r in metrics.read_jsonl(workdir / "metrics.jsonl")
            if r.get("step") == STOP and "train_loss" in r]
  assert len(losses) == 2 and losses[0] == losses[1], losses


@pytest.mark.timeout(120)
def test_a_broken_metrics_file_costs_only_that_steps_rank(prepared, stopped, tmp_path, capsys):
  """Orbax reads every step's metrics when it starts, and one unreadable file stopped it."""
  from audiotl_jax.stages import pretrain
  workdir = tmp_path / "run"
  shutil.copytree(stopped, workdir)
  (workdir / "checkpoints" / str(STOP) / "metrics" / "metrics").write_text('{"val_mAP": ')
  results = pretrain.run(_config(prepared), workdir)
  out = capsys.readouterr()
  warned = _warnings(out.out + out.err)
  assert len(warned) == 1 and f"step {STOP}" in warned[0] and "metric" in warned[0], out
  assert f"resuming from step {STOP}" in out.out
  assert results["total_steps"] == TOTAL


@pytest.mark.timeout(120)
def test_resume_with_every_step_damaged_starts_again(prepared, stopped, tmp_path, capsys):
  from audiotl_jax.stages import pretrain
  workdir = tmp_path / "run"
  shutil.copytree(stopped, workdir)
  for step in (2, 3, 4):
    shutil.rmtree(workdir / "checkpoints" / str(step) / "model")
  results = pretrain.run(_config(prepared), workdir)
  out = capsys.readouterr()
  assert len(_warnings(out.out + out.err)) == 3, out
  assert "resuming" not in out.out
  assert results["total_steps"] == TOTAL
  assert checkpoints.finished_steps(workdir / "checkpoints")[-1] == TOTAL


@pytest.mark.timeout(120)
@pytest.mark.parametrize("damage", ["model file truncated", "model file emptied",
                                    "model metadata emptied"])
def test_load_model_of_a_workdir_falls_back(stopped, tmp_path, capsys, damage):
  workdir = tmp_path / "run"
  shutil.copytree(stopped, workdir)
  DAMAGE[damage](workdir / "checkpoints" / str(STOP))
  model, meta, step_dir = checkpoints.load_model(workdir)
  out = capsys.readouterr()
  warned = _warnings(out.out + out.err)
  assert len(warned) == 1 and f"step {STOP}" in warned[0] and "step 3" in warned[0], out
  assert step_dir.name == "3" and meta["stage"] == "pretrain"
  intact, _, _ = checkpoints.load_model(stopped / "checkpoints" / "3")
  jax.tree.map(np.testing.assert_array_equal, model, intact)


@pytest.mark.timeout(120)
def test_load_model_of_a_workdir_whose_latest_lost_its_model(stopped, tmp_path, capsys):
  workdir = tmp_path / "run"
  shutil.copytree(stopped, workdir)
  shutil.rmtree(workdir / "checkpoints" / str(STOP) / "model")
  _, _, step_dir = checkpoints.load_model(workdir)
  out = capsys.readouterr()
  assert step_dir.name == "3"
  assert len(_warnings(out.out + out.err)) == 1, out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("damage", ["model file truncated", "model file emptied",
                                    "model metadata emptied"])
def test_load_model_of_a_named_damaged_step_is_a_one_line_error(stopped, tmp_path, damage):
  workdir = tmp_path / "run"
  shutil.copytree(stopped, workdir)
  step_dir = workdir / "checkpoints" / str(STOP)
  DAMAGE[damage](step_dir)
  with pytest.raises(UserError) as raised:
    checkpoints.load_model(step_dir)
  message = str(raised.value)
  assert "\n" not in message and str(step_dir) in message and "damaged" in message, message
  assert len(message) < 400, message
