"""Bad input to embed and score is refused before any state is embedded (issue 10, item 18)."""
import numpy as np
import pytest
import soundfile as sf

from audiotl_jax.data import readers, shard_writer
from audiotl_jax.errors import UserError
from audiotl_jax.stages import embed as embedding
from audiotl_jax.stages import score as scoring


def test_embed_names_a_misspelt_split_before_embedding_any(prepared, pretrained, tmp_path):
  with pytest.raises(UserError, match="no split 'tset'"):
    embedding.embed(checkpoint=pretrained, dataset_dir=prepared["speech_commands"],
                    splits=["train", "tset"], layers=["embedding"], pooling="mean",
                    out_dir=tmp_path / "emb", batch_size=8, progress=False)
  assert not (tmp_path / "emb" / "train").exists()  # the good split was not embedded first


def test_score_refuses_a_single_class_split_before_embedding(pretrained, tmp_path):
  rows = []
  for i in range(6):
    sf.write(tmp_path / f"c{i}.wav", np.full(1600, 100 * (i + 1), np.int16), 16000)
    rows.append(f"c{i}.wav,{'only' if i < 4 else 'other'},{'train' if i < 4 else 'test'}")
  (tmp_path / "l.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
  shard_writer.prepare(readers.csv_manifest(tmp_path / "l.csv"), tmp_path / "data",
                       clip_seconds=1.0, num_workers=1, progress=False)
  with pytest.raises(UserError, match="1 class"):
    scoring.score(checkpoints={"a": pretrained}, dataset_dir=tmp_path / "data", split="train",
                  layers=["embedding"], scores=["logme"], out_dir=tmp_path / "out",
                  batch_size=8, val_split="test", progress=False)
  assert not (tmp_path / "out" / "embeddings").exists()


def test_sample_rate_mismatch_names_the_real_config_key():
  import types
  import ml_collections
  from audiotl_jax.train import loop
  dataset = types.SimpleNamespace(sample_rate=32000, path="data/x")
  with pytest.raises(UserError) as e:
    loop.check_sample_rate(dataset, ml_collections.ConfigDict({"sample_rate": 16000}))
  assert "--config.sample_rate=16000" in str(e.value) and "--sample-rate" not in str(e.value)


def test_rerun_on_a_finished_workdir_keeps_its_config(pretrained, prepared, tmp_path):
  """Issue 10, item 22: the saved config must keep agreeing with results.json."""
  import shutil
  from conftest import tiny_pretrain_config
  from audiotl_jax.stages import pretrain
  workdir = tmp_path / "done"
  shutil.copytree(pretrained, workdir)
  before = (workdir / "config.json").read_bytes()
  results = pretrain.run(tiny_pretrain_config(prepared["audioset"], seed=7), workdir)
  assert results["seed"] == 0
  assert (workdir / "config.json").read_bytes() == before
