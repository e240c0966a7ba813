r"""Transfer recipes compared on one task: embeddings of VGGish and PANNs Cnn14 with a new
classifier, frozen lower layers with the rest trained, a hybrid of several layers' embeddings,
and full fine-tuning.

  audiotl study --config configs/studies/feature_extraction.py:vggish=/models/vggish-10086976.pth,\
cnn14=/models/Cnn14_16k_mAP=0.438.pth,data.esc50=/data/ESC-50-master --workdir runs/recipes
  audiotl study --config configs/studies/feature_extraction.py:scale=test --workdir /tmp/fx

Per backbone (`import_vggish/vggish`, `import_cnn14/cnn14`), on ESC-50 fold 1:
  embed_*/    the embeddings of every layer the probes read, exported once (`audiotl embed`)
  probe_*/    logistic regression (L2 chosen on validation) and a small MLP
              on the final embedding, and on a hybrid: the mean-pooled outputs of the last two
              blocks and the embedding, concatenated (`audiotl probe`)
  finetune_*/ `linear` and `mlp` heads trained through the frozen network (with augmentation:
              the end-to-end counterpart of the probes), `partial:2` (blocks 1-2 frozen, the rest
              trains) and `full`
At `scale=test` no released weights exist: tiny variants pre-trained for a few steps on synthetic
AudioSet stand in for them.

Arguments after the colon: scale (full | test), vggish and cnn14 (the released .pth files;
vggish_pca for VGGish's PCA parameters, optional), `data.esc50` (raw root), seeds
(`+`-separated).
"""
import ml_collections

from audiotl_jax.config import parse_arg
from configs.studies import common

# backbone -> (model, the layers of its hybrid: the last two blocks and the embedding)
BACKBONES = {"vggish": ("vggish:base", "block3+block4+embedding"),
             "cnn14": ("panns:cnn14_16k", "block5+block6+embedding")}
TINY = {"vggish": ("vggish:tiny", "block3+block4+embedding"),
        "cnn14": ("panns:tiny", "block2+block3+embedding")}


def get_config(arg=None):
  arg = parse_arg(arg, scale="full", vggish="models/vggish-10086976.pth", vggish_pca="",
                  cnn14="models/Cnn14_16k_mAP=0.438.pth",
                  data=dict(esc50="data/raw/ESC-50-master"), seeds="0+1+2")
  test = arg.scale == "test"
  seeds = tuple(int(s) for s in arg.seeds.split("+"))
  backbones = TINY if test else BACKBONES
  c = ml_collections.ConfigDict()
  c.description = "feature extraction vs partial and full fine-tuning of VGGish and PANNs Cnn14"
  roots = {**arg.data.to_dict(), **({"audioset": ""} if test else {})}
  steps = common.data_steps(roots, test=test, clip_seconds=1.0 if test else None)
  if test:
    steps.append(common.stand_in_step({k: m for k, (m, _) in backbones.items()}))
  else:
    for name, (model, _) in backbones.items():
      pca = ("--pca", arg.vggish_pca) if name == "vggish" and arg.vggish_pca else ()
      steps.append(dict(step=f"import_{name}", stage="import",
                        args=("--weights", getattr(arg, name), "--model", model, *pca,
                              "--workdir", f"{{study}}/import_{name}/{name}")))
  task = common.prepared("esc50_fold1")
  clip = 1.0 if test else 5.0
  short = {"total_steps": 2, "batch_size": 8, "frontend.norm_batches": 1} if test else {}
  for name, (model, hybrid) in backbones.items():
    # test: one state per backbone from the shared `import` step
    init = f"{{study}}/import/{name}" if test else f"{{study}}/import_{name}/{name}"
    after = (common.step_of("esc50"), "import" if test else f"import_{name}")
    # Embedded once (every layer the probes read), then probed many times.
    steps.append(dict(
        step=f"embed_{name}", stage="embed", base="embed.py", axes=(),
        fixed=(("checkpoint", init), ("data.dir", task), ("data.clip_seconds", clip),
               ("layers", tuple(hybrid.split("+"))), ("batch_size", 8 if test else 64),
               ("progress", False)),
        name=name, after=after))
    steps.append(dict(
        step=f"probe_{name}", stage="probe", base="probe.py",
        axes=(("classifier", ("logistic", "mlp")), ("layers", ("embedding", hybrid)),
              ("label", ("embedding", "hybrid")), ("seed", seeds)),
        zip=(("layers", "label"),),
        fixed=(("init", init), ("data.dir", task), ("data.clip_seconds", clip),
               ("embeddings_dir", f"@embed_{name}"), ("progress", False)),
        name="{classifier}-{label}-s{seed}", after=after))
    steps.append(dict(
        step=f"finetune_{name}", stage="finetune", base=f"finetune.py:model={model}",
        axes=((":strategy", ("linear", "mlp", "partial:2", "full")),
              ("seed", seeds), ("data.seed", seeds)),
        zip=(("seed", "data.seed"),),
        fixed=tuple({"init": init, "data.dir": task, "data.clip_seconds": clip, "batch_size": 32,
                     "num_epochs": 30.0, "progress": False, **short}.items()),
        name="{strategy}-s{seed}", after=after))
  steps.append(dict(step="report", stage="report", args=("--workdir", "{study}"),
                    after=tuple(s["step"] for s in steps if s["step"].startswith(
                        ("probe_", "finetune_")))))
  c.steps = steps
  c.report = dict(
      notes=["Probes train on embeddings exported once (no augmentation); the `linear` and "
             "`mlp` fine-tunings train the same heads through the frozen network."]
      + (["scale=test: synthetic data and tiny stand-ins for the released weights; the numbers "
          "only show that the study runs."] if test else []))
  return c
