r"""Export embeddings of named layers for a prepared dataset.

  audiotl embed --config configs/embed.py --config.checkpoint=runs/pretrain_animal \
      --config.data.dir=data/speech_commands_prepared --workdir runs/emb_animal_sc

`layers`: any names of the model's output dict (CNNs: `block1`..., `pooled`, `embedding`,
`logits`; AST: `cls`, `dist`, `cls_dist_mean`, `patch_mean`, `tokens`), each optionally
`name:pooling`. `pooling`: the default for feature maps and token sequences (vectors take none):
rank 4 (CNN maps) mean, max, meanmax, panns, time_mean, time_max; rank 3 (AST tokens) cls, dist,
cls_dist_mean, patch_mean, mean, max. `layout`: npy, or hear (also one scene-embedding file per
clip, as the HEAR 2021 kit stores them). A killed run resumes from `<split>/progress.json`,
written every `flush_every` batches.
"""
import ml_collections


def get_config(arg=None):
  del arg
  return ml_collections.ConfigDict(dict(
      checkpoint="", data=dict(dir="", splits=("train", "validation", "test"), clip_seconds=0.0),
      layers=("embedding",), pooling="mean", layout="npy", batch_size=64, flush_every=50,
      num_devices=0, progress=True))
