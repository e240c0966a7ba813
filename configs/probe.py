r"""A classifier on frozen embeddings: the feature-extraction recipe (embed once, then fit).

  audiotl probe --config configs/probe.py --config.init=runs/import/cnn14 \
      --config.data.dir=data/esc50_fold1 --config.layers=block5+block6+embedding \
      --config.classifier=mlp --workdir runs/probe_cnn14_hybrid

`layers`: one layer, or several joined by `+` (a hybrid: their pooled outputs concatenated);
`label` names that set in the run's strategy (`probe:<classifier>@<label or layers>`).
`classifier`: logistic (multinomial logistic regression, its L2 weight chosen on the validation
split from `l2_grid`) or mlp (one hidden layer of `mlp_hidden` units, early-stopped on the
validation split). The embeddings are written under the workdir (`embeddings/`), or, with
`embeddings_dir`, read from an `audiotl embed` folder that holds every layer asked for, so
many probes share one pass over the data.
"""
import ml_collections


def get_config(arg=None):
  del arg
  return ml_collections.ConfigDict(dict(
      init="", label="",
      data=dict(dir="", train_split="train", val_split="validation", test_split="test",
                clip_seconds=0.0),
      layers="embedding", pooling="mean", classifier="logistic",
      l2_grid=(1e-4, 1e-3, 1e-2, 1e-1, 1.0), mlp_hidden=256, mlp_steps=500, seed=0,
      embeddings_dir="",   # "" = embed into workdir/embeddings; else an `audiotl embed` folder
      batch_size=64, progress=True))
