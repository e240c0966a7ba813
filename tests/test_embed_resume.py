"""`audiotl embed` resumes only what the same checkpoint, layers and clip length started."""
import json

import numpy as np
import pytest

from audiotl_jax.errors import UserError
from audiotl_jax.stages import embed as embedding

LAYERS = ["embedding", "block2:panns"]


def _embed(prepared, checkpoint, out, layers=LAYERS, **kw):
  return embedding.embed(checkpoint=checkpoint, dataset_dir=prepared["speech_commands"],
                         splits=["train"], layers=layers, pooling="mean", out_dir=out,
                         batch_size=8, progress=False, **kw)


def _stopped(prepared, checkpoint, out, monkeypatch):
  """An embedding killed right after its second progress record."""
  real_write = embedding._write_progress
  calls = []

  def killed(split_dir, state):
    real_write(split_dir, state)
    calls.append(state["batches"])
    if len(calls) == 2:
      raise KeyboardInterrupt

  with monkeypatch.context() as m:
    m.setattr(embedding, "_write_progress", killed)
    with pytest.raises(KeyboardInterrupt):
      _embed(prepared, checkpoint, out, flush_every=1)
  assert json.loads((out / "train/progress.json").read_text())["batches"] == 2


def _arrays(out):
  return {p.stem: np.load(p) for p in sorted((out / "train").glob("*.npy"))}


def test_a_partial_split_resumes_only_with_the_same_settings(prepared, pretrained, tmp_path,
                                                             monkeypatch):
  _embed(prepared, pretrained, tmp_path / "clean")
  clean = _arrays(tmp_path / "clean")
  out = tmp_path / "resumed"
  _stopped(prepared, pretrained, out, monkeypatch)
  with pytest.raises(UserError, match=r"partial run with other layers \(block2:panns, "
                                      r"embedding:none there; block2:max, embedding:none now\); "
                                      r"use another workdir or delete .*train/progress\.json$"):
    _embed(prepared, pretrained, out, layers=["embedding", "block2:max"])
  with pytest.raises(UserError, match=r"another checkpoint \(\S+/checkpoints/4 there; "
                                      r"\S+/checkpoints/2 now\)"):
    _embed(prepared, pretrained / "checkpoints/2", out)
  with pytest.raises(UserError, match=r"another clip length \(1\.0 s there; 0\.5 s now\)"):
    _embed(prepared, pretrained, out, clip_seconds=0.5)
  # Refused runs touch nothing: the same settings resume and give the uninterrupted arrays.
  _embed(prepared, pretrained, out)
  assert _arrays(out).keys() == clean.keys()
  for name, value in clean.items():
    np.testing.assert_array_equal(_arrays(out)[name], value, err_msg=name)


def test_a_finished_split_is_not_reused_for_other_settings(prepared, pretrained, tmp_path):
  out = tmp_path / "done"
  first = _embed(prepared, pretrained, out)["train"]
  with pytest.raises(UserError, match=r"done/train is complete with another checkpoint \(.*\); "
                                      r"use another workdir or delete \S+/done/train$"):
    _embed(prepared, pretrained / "checkpoints/2", out)
  with pytest.raises(UserError, match=r"other layers \(.*there; block1:mean, embedding:none "
                                      r"now\)"):
    _embed(prepared, pretrained, out, layers=["embedding", "block1"])
  # Fewer of the same layers: the finished arrays already hold them.
  assert _embed(prepared, pretrained, out, layers=["embedding"])["train"] == first
  # metadata.json of an older version, without the settings record: checked on what it says.
  legacy = {k: v for k, v in first.items() if k != "settings"}
  (out / "train/metadata.json").write_text(json.dumps(legacy))
  with pytest.raises(UserError, match=r"other layers \(block2:panns, embedding:none there"):
    _embed(prepared, pretrained, out, layers=["block2:max"])
  with pytest.raises(UserError, match="another checkpoint"):
    _embed(prepared, pretrained / "checkpoints/2", out)
  assert _embed(prepared, pretrained, out)["train"] == legacy


def test_an_unreadable_metadata_file_is_embedded_again(prepared, pretrained, tmp_path):
  """Older versions could leave an empty metadata.json on a full disk; it must not block."""
  out = tmp_path / "emb"
  first = _embed(prepared, pretrained, out)["train"]
  (out / "train/metadata.json").write_text("")
  assert _embed(prepared, pretrained, out)["train"] == first
  assert json.loads((out / "train/metadata.json").read_text()) == first
