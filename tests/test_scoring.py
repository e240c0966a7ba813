"""`audiotl score`: checkpoints x layers x scores, streamed or in memory, and its CLI wiring."""
import json

import numpy as np
import pytest

from audiotl_jax import cli
from audiotl_jax.stages import score as scoring
from audiotl_jax.errors import UserError


NAMES = ["nc_score", "logme", "leep", "nce", "hscore", "gbc", "transrate", "logme_heldout"]


def _common(prepared, pretrained, names=NAMES):
  from audiotl_jax.data.dataset import PreparedDataset
  splits = PreparedDataset(prepared["speech_commands"]).manifest["splits"]
  return dict(checkpoints={"a": pretrained}, dataset_dir=prepared["speech_commands"],
              split="train", layers=["embedding", "block2:max"], scores=names, batch_size=8,
              val_split="validation" if "validation" in splits else "test", progress=False)


def test_score_layers_and_all_scores(prepared, pretrained, tmp_path):
  names, common = NAMES, _common(prepared, pretrained)
  rows = scoring.score(out_dir=tmp_path / "mem", **common)
  assert [r["layer"] for r in rows] == ["embedding", "block2_max"]
  assert rows[0]["num_params"] > 0 and rows[1]["dim"] > 0
  for row in rows:
    assert all(np.isfinite(row[k]) for k in names), row
  # LEEP and NCE read the source head: the same for both layers.
  assert rows[0]["leep"] == rows[1]["leep"] and rows[0]["nce"] == rows[1]["nce"]
  saved = json.loads((tmp_path / "mem/scores.json").read_text())
  assert saved["scores"]["nc_score"] == {"higher_is_better": False}
  assert saved["rows"] == json.loads(json.dumps(rows))
  with pytest.raises(UserError, match="unknown score 'logm'"):
    scoring.score(out_dir=tmp_path / "x", **{**common, "scores": ["logm"]})


@pytest.mark.slow
def test_streamed_scores_equal_in_memory(prepared, pretrained, tmp_path):
  common = _common(prepared, pretrained)
  rows = scoring.score(out_dir=tmp_path, **common)
  # From the same (already written, so not recomputed) memory-mapped embeddings.
  streamed = scoring.score(out_dir=tmp_path, stream=True, chunk_size=16, **common)
  for a, b in zip(rows, streamed):
    for k in NAMES:
      assert b[k] == pytest.approx(a[k], rel=2e-4, abs=1e-5), k


def test_score_and_rank_from_the_command_line(prepared, pretrained, tmp_path):
  cli.main(["score", "--workdir", str(tmp_path / "score"),
            f"--config.checkpoints={pretrained}",
            f"--config.data.dir={prepared['speech_commands']}", "--config.layers=embedding",
            "--config.batch_size=8", "--config.progress=False"])
  rows = json.loads((tmp_path / "score/scores.json").read_text())["rows"]
  assert len(rows) == 1 and rows[0]["source"] == pretrained.name
  # Three fine-tuning results that name the same checkpoint: the harness matches them by path.
  for i, acc in enumerate((0.5, 0.6, 0.7)):
    d = tmp_path / "finetune" / f"run{i}-linear"
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps({
        "stage": "finetune", "strategy": f"s{i}", "init": str(pretrained), "metric": "accuracy",
        "test": {"accuracy": acc}}))
  cli.main(["rank", "--scores", str(tmp_path / "score"), "--finetune",
            str(tmp_path / "finetune" / "*"), "--workdir", str(tmp_path / "rank"),
            "--bootstrap", "20"])
  records = json.loads((tmp_path / "rank/ranking.json").read_text())
  assert {r["strategy"] for r in records} == {"s0", "s1", "s2"}
  # One state per strategy: matched, but no ranking statistic is defined for a single state.
  assert all(r["num_states"] == 1 and np.isnan(r["spearman"]) and np.isnan(r["top1_hit"])
             for r in records)
  assert {r["score"] for r in records} >= {"logme", "logme+size", "gbc", "transrate"}
  # `audiotl report` on a study folder (score/ + finetune/) also runs the harness.
  cli.main(["report", "--workdir", str(tmp_path)])
  assert (tmp_path / "report.md").exists() and (tmp_path / "ranking/ranking.png").exists()
