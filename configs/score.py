r"""Transferability scores of pre-trained states on a downstream dataset.

  audiotl score --config configs/score.py \
      --config.checkpoints=runs/pretrain_animal,runs/pretrain_music \
      --config.data.dir=data/speech_commands_prepared --workdir runs/scores_sc

`checkpoints`: comma-separated pre-training workdirs (or step folders); each is named by its
folder. `layers`: comma-separated layer names (`audiotl embed` lists pooling per family).
Scores: `audiotl_jax.scores.SCORES` plus `logme_heldout` (validation-aware: also embeds
`data.val_split`). `stream`: compute from the memory-mapped embeddings in chunks of `chunk_size`.
`probe`: "" (off) or "linear": a logistic-regression probe per (checkpoint, layer), trained on
`data.split` and evaluated on `probe_split` ("test", or "validation" where there is no test
split), reported beside the scores as `probe` (see analysis/layers.py for layer-wise transfer).
Rank the states against fine-tuning results with `audiotl rank`.
"""
import ml_collections


def get_config(arg=None):
  del arg
  return ml_collections.ConfigDict(dict(
      checkpoints="", data=dict(dir="", split="train", val_split="validation", clip_seconds=0.0),
      layers="embedding", pooling="mean",
      scores=("nc_score", "logme", "leep", "nce", "hscore", "gbc", "transrate"), batch_size=64,
      stream=False, chunk_size=65536,
      probe="",  # "" or "linear": the layer-wise probe (embeds probe_split too)
      probe_split="test",  # where the probe is evaluated; "test" falls back to "validation"
      progress=True))
