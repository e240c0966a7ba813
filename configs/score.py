r"""Transferability scores of pre-trained states on a downstream dataset.

  audiotl score --config configs/score.py \
      --config.checkpoints=runs/pretrain_animal,runs/pretrain_music \
      --config.data.dir=data/speech_commands_prepared --workdir runs/scores_sc

`checkpoints`: comma-separated pre-training workdirs (or step folders); each is named by its
folder. Scores: see `audiotl_jax.transferability.SCORES`.
"""
import ml_collections


def get_config(arg=None):
  del arg
  return ml_collections.ConfigDict(dict(
      checkpoints="", data=dict(dir="", split="train", clip_seconds=0.0),
      layer="embedding", pooling="mean", scores=("nc_score", "logme", "leep"), batch_size=64,
      progress=True))
