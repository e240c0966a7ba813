r"""Export embeddings of named layers for a prepared dataset.

  audiotl embed --config configs/embed.py --config.checkpoint=runs/pretrain_animal \
      --config.data.dir=data/speech_commands_prepared --workdir runs/emb_animal_sc

`layers`: any names of the model's output dict (`audiotl models` lists families; `block1`...,
`pooled`, `embedding`, `logits`). Feature maps are pooled with `pooling` (mean, max, meanmax).
"""
import ml_collections


def get_config(arg=None):
  del arg
  return ml_collections.ConfigDict(dict(
      checkpoint="", data=dict(dir="", splits=("train", "validation", "test"), clip_seconds=0.0),
      layers=("embedding",), pooling="mean", batch_size=64, num_devices=0, progress=True))
