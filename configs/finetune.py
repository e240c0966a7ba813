r"""Fine-tune a pre-trained checkpoint (or train from scratch) on a downstream task.

  audiotl finetune --config configs/finetune.py:strategy=linear \
      --config.init=runs/pretrain_animal --config.data.dir=data/speech_commands_prepared \
      --workdir runs/ft_animal_linear

Arguments after the colon: strategy (linear, mlp, full, partial:K, bitfit, conv_adapter, lora,
houlsby, pfeiffer, prompt, deep_prompt, prefix; see audiotl_jax/models/transfer/), model
(used when training from scratch; a checkpoint brings its own), runlocal.
`init` is a pre-training workdir, its checkpoints/ folder or one step folder; empty trains from
scratch. The best epoch is chosen on the validation split; the test split is scored once, at the
end, into `results.json`.
"""
import ml_collections


from audiotl_jax import config as config_lib
from audiotl_jax.config import parse_arg
from configs import common


def get_config(arg=None):
  arg = parse_arg(arg, strategy="linear", model="cnn:S", runlocal=False)
  c = ml_collections.ConfigDict()
  c.init = ""
  c.label = ""                  # a name for the run in a study's folders and reports; changes nothing
  c.strategy = arg.strategy
  c.model = dict(name=arg.model, dtype="float32", remat=False)  # dtype: compute (bfloat16)
  # Options of the parameter-efficient strategies (see audiotl_jax/models/transfer/): reduction rates,
  # LoRA rank and targets, adapter mode and place, prompt/prefix tokens, which LayerNorms train
  # ("auto": as the PETL_AST code), and `petl_ast_compat` (reproduce that code's choices).
  c.petl = config_lib.petl_defaults()
  c.save_adapter = True         # also write workdir/adapter/: only the trained leaves
  c.data = dict(
      dir="", train_split="train", val_split="validation", test_split="test",
      clip_seconds=1.0, fraction=1.0, seed=0, worker_count=0,
      few_shot=0,               # > 0: k training clips per class, drawn by data.seed
      balanced=False)           # draw clips by label rarity (for imbalanced downstream sets)
  # Features must match pre-training: by default the checkpoint's frontend settings are used and
  # only the normalisation statistics are computed afresh on the downstream training data.
  c.frontend_from_checkpoint = True
  c.frontend = common.frontend(arg.runlocal, kind=common.frontend_kind(arg.model))
  c.augment = common.augment(specaugment=arg.strategy != "linear")
  # "multiclass": train a binary task as two classes (softmax cross-entropy, accuracy) instead
  # of one sigmoid output (BCE, AUROC); "": the dataset's own task.
  c.task = ""
  # Cross-entropy weighted by inverse class frequency in the training selection, normalised to
  # sum to the number of classes (the ontology/data-scale study's loss).
  c.class_balanced = False
  c.batch_size = 64
  c.total_steps = 0
  c.num_epochs = 20.0
  c.eval_every = 0              # steps; 0 = once per epoch
  c.optim = common.optim(1e-2 if arg.strategy == "linear" else 1e-3)
  c.log_every = 50
  c.keep_checkpoints = 1
  c.seed = 0
  # Resuming under a config that changes results is refused unless this is set (the old config
  # is then kept in config_history/).
  c.allow_changes = False
  c.num_devices = 0
  c.progress = True
  if arg.runlocal:
    c.batch_size = 16
    c.total_steps = 12
    c.eval_every = 6
    c.log_every = 3
  return c
