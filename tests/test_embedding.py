"""`audiotl embed`: pooling by rank, the HEAR layout, and resuming after a kill mid-split."""
import json
import types

import numpy as np
import pytest

from audiotl_jax.stages import embed as embedding
from audiotl_jax.errors import UserError

SHAPES = {"embedding": (1, 32), "block2": (1, 10, 8, 16), "tokens": (1, 12, 24)}


def test_pooling_is_checked_against_the_layer_rank():
  shapes = {k: types.SimpleNamespace(shape=v) for k, v in SHAPES.items()}
  out = embedding.resolve_layers(["embedding", "block2", "block2:panns", "tokens:cls"], "mean",
                                 shapes, "m")
  assert out == {"embedding": ("embedding", "none"), "block2": ("block2", "mean"),
                 "block2_panns": ("block2", "panns"), "tokens_cls": ("tokens", "cls")}
  with pytest.raises(UserError, match="'cls' does not apply to layer 'block2'.*rank 4 use one "
                                      "of max, mean, meanmax, panns, time_max, time_mean"):
    embedding.resolve_layers(["block2:cls"], "mean", shapes, "m")
  with pytest.raises(UserError, match="for rank 2 use one of none"):
    embedding.resolve_layers(["embedding:max"], "mean", shapes, "m")
  with pytest.raises(UserError, match="unknown pooling 'avg'"):
    embedding.resolve_layers(["block2"], "avg", shapes, "m")
  with pytest.raises(UserError, match="unknown layer of m 'nope'"):
    embedding.resolve_layers(["nope"], "mean", shapes, "m")


def test_poolings_compute_what_they_say():
  x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
  pool = lambda how, v: np.asarray(embedding.POOLING[how][1](v))
  np.testing.assert_allclose(pool("panns", x), x.mean(2).max(1) + x.mean(2).mean(1))
  assert pool("time_mean", x).shape == (2, 20)
  t = np.random.default_rng(0).standard_normal((2, 6, 3))
  np.testing.assert_allclose(pool("cls_dist_mean", t), (t[:, 0] + t[:, 1]) / 2, rtol=1e-6)
  np.testing.assert_allclose(pool("patch_mean", t), t[:, 2:].mean(1), rtol=1e-6)


def _embed(prepared, pretrained, out, **kw):
  return embedding.embed(checkpoint=pretrained, dataset_dir=prepared["speech_commands"],
                         splits=["train"], layers=["embedding", "block2:panns"], pooling="mean",
                         out_dir=out, batch_size=8, progress=False, **kw)


def test_embed_resumes_after_a_kill_and_writes_the_hear_layout(prepared, pretrained, tmp_path,
                                                               monkeypatch):
  clean = _embed(prepared, pretrained, tmp_path / "clean", layout="hear")["train"]
  n = clean["num_clips"]
  assert clean["pooling"] == {"embedding": "none", "block2_panns": "panns"}
  assert clean["num_params"] > 0 and clean["layers"]["embedding"] == [n, 32]
  # HEAR: one scene embedding per clip, with its labels by file stem.
  ids = json.loads((tmp_path / "clean/train/ids.json").read_text())
  emb = np.load(tmp_path / "clean/train/embedding.npy")
  stem = ids[3].replace("/", "__")
  np.testing.assert_array_equal(
      np.load(tmp_path / f"clean/hear/embedding/train/{stem}.embedding.npy"), emb[3])
  targets = json.loads((tmp_path / "clean/hear/embedding/train.target-labels.json").read_text())
  assert len(targets) == n and all(len(v) == 1 for v in targets.values())

  # Kill the run right after its second progress record.
  calls = []
  real_write = embedding._write_progress

  def killed(split_dir, state):
    real_write(split_dir, state)
    calls.append(state["batches"])
    if len(calls) == 2:
      raise KeyboardInterrupt

  monkeypatch.setattr(embedding, "_write_progress", killed)
  with pytest.raises(KeyboardInterrupt):
    _embed(prepared, pretrained, tmp_path / "resumed", flush_every=1)
  assert not (tmp_path / "resumed/train/metadata.json").exists()
  assert json.loads((tmp_path / "resumed/train/progress.json").read_text())["batches"] == 2
  monkeypatch.setattr(embedding, "_write_progress", real_write)

  # The second run reads only the records after the first 2 batches of 8.
  seen = []
  real_batches = embedding.pipeline.eval_batches

  def recording(*args, indices=None, **kw):
    seen.append(np.asarray(indices))
    return real_batches(*args, indices=indices, **kw)

  monkeypatch.setattr(embedding.pipeline, "eval_batches", recording)
  _embed(prepared, pretrained, tmp_path / "resumed", flush_every=1)
  assert seen[0][0] == 16 and len(seen[0]) == n - 16
  for name in ("embedding", "block2_panns", "labels"):
    np.testing.assert_array_equal(np.load(tmp_path / f"resumed/train/{name}.npy"),
                                  np.load(tmp_path / f"clean/train/{name}.npy"))
  assert not (tmp_path / "resumed/train/progress.json").exists()
  with pytest.raises(UserError, match="unknown layout 'hdf5'"):
    _embed(prepared, pretrained, tmp_path / "x", layout="hdf5")
