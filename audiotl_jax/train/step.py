"""The pieces of a step shared by pre-training and fine-tuning.

Waveforms arrive as int16 and become features on the device, inside the jitted step: log-mel,
normalisation, then (training only) SpecAugment and mixup. The train step is pure and donates its
state; the same factory serves every stage and strategy, because a transfer strategy is only a
mask (which parameters and BatchNorm statistics may change) and whether BatchNorm runs in
training mode.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from tqdm import tqdm

from audiotl_jax.errors import UserError
from audiotl_jax.features import fbank
from audiotl_jax.features import featurizer
from audiotl_jax.features.augment import mixup
from audiotl_jax.features.normalization import feature_stats
from audiotl_jax.train import aot, mesh as mesh_lib
from audiotl_jax.train.state import TrainState


def model_options(mcfg) -> dict:
  """Model constructor overrides from config block `model`: `dtype` (compute; parameters stay
  float32) and `remat` (recompute blocks in the backward pass), only where set."""
  out = {}
  dtype = mcfg.get("dtype", "float32") or "float32"
  if dtype not in ("float32", "bfloat16"):
    raise UserError(f"config key 'model.dtype' must be float32 or bfloat16, got {dtype!r}")
  if dtype == "bfloat16":
    out["dtype"] = jnp.bfloat16
  if mcfg.get("remat", False):
    out["remat"] = True
  return out


def compute_norm(fcfg, batches, mesh, num_batches: int) -> dict:
  """Mean and std of log-mel features over the first `num_batches` training batches.

  The fbank frontend normalises with fixed statistics (AudioSet's unless the config gives a
  dataset's own, from `audiotl stats`), as AST does: nothing is computed. PANNs and VGGish
  frontends keep their recipes' features: the identity.
  """
  if fcfg.get("kind", "logmel") == "fbank":
    return {"mean": float(fcfg.get("fbank_mean", fbank.AUDIOSET_MEAN)),
            "std": float(fcfg.get("fbank_std", fbank.AUDIOSET_STD))}
  if fcfg.get("kind", "logmel") in ("panns", "vggish"):
    # Their own recipes: PANNs normalise in the model (bn0), VGGish not at all. Identity, so
    # the metadata does not record statistics nothing uses.
    return {"mean": 0.0, "std": 1.0}
  featurize = featurizer.make_featurizer(fcfg, None)
  measure = jax.jit(lambda audio: feature_stats(featurize(audio)))
  stats = []
  for _, batch in zip(range(num_batches), batches):
    audio = mesh_lib.to_global({"audio": batch["audio"]}, mesh)["audio"]
    if not stats:  # one program for every batch (same shapes), through the program cache
      measure = aot.compile(measure, audio)
    stats.append(jax.device_get(measure(audio)))
  mean = float(np.mean([m for m, _ in stats]))
  # Pool the variances, not the stds, so the result is the std over all batches together.
  var = float(np.mean([s**2 + (m - mean)**2 for m, s in stats]))
  return {"mean": mean, "std": float(np.sqrt(max(var, 1e-12)))}


def bce_loss(logits, targets):
  return optax.sigmoid_binary_cross_entropy(logits, targets).mean()


def ce_loss(logits, targets):
  """Cross-entropy with soft targets (one-hot, or mixed by mixup)."""
  return optax.softmax_cross_entropy(logits, targets).mean()


def weighted_ce_loss(class_weights):
  """Cross-entropy weighted per class, as torch's `CrossEntropyLoss(weight=w)`: the weighted mean
  sum_i w[y_i] ce_i / sum_i w[y_i], so a batch's loss does not depend on how rare its classes
  are; with soft targets (mixup) a clip's weight is its targets' mix of the class weights."""
  w = jnp.asarray(class_weights, jnp.float32)

  def loss(logits, targets):
    per_clip = targets @ w
    ce = optax.softmax_cross_entropy(logits, targets)
    return (per_clip * ce).sum() / jnp.maximum(per_clip.sum(), 1e-12)
  return loss


def balanced_class_weights(counts) -> np.ndarray:
  """Inverse-frequency weights normalised to sum to the number of classes (autrainer's
  "balanced" cross-entropy, used by the ontology/data-scale study); a class without training
  clips gets weight 0 rather than infinity."""
  counts = np.asarray(counts, np.float64)
  inv = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
  return (inv * len(counts) / inv.sum()).astype(np.float32)


def make_train_step(model, featurize, tx, *, loss_fn, augment, num_classes: int, target: str,
                    model_train: bool = True, trainable=None, stats_trainable=None, mesh=None):
  """Builds `step(state, batch, norm) -> (state, metrics)`; jit it with the state donated.

  `norm` is the feature statistics as an argument (`featurizer.norm_args`), not a constant, so
  runs whose statistics differ share one compiled program.

  `trainable`: a boolean tree over params; frozen leaves are wrapped in `stop_gradient` so XLA
  drops the backward pass through a frozen backbone (the optimizer mask zeroes their updates).
  `stats_trainable`: a boolean tree over batch_stats; False leaves keep their value (frozen
  blocks keep their running statistics). `model_train=False` runs BatchNorm in inference mode,
  as a linear probe on a frozen backbone should. `mesh`: the mesh the batch is sharded over
  (mixup draws its partners and lambdas replicated on it; `augment.mixup`).
  """

  def step(state: TrainState, batch, norm):
    rng = jax.random.fold_in(state.rng, state.step)
    r_aug, r_mix, r_drop = jax.random.split(rng, 3)
    x = featurize(batch["audio"], rng=r_aug, train=True, augment=augment, norm=norm)
    y = batch["label"]
    if target == "class":
      y = jax.nn.one_hot(y, num_classes)
    if augment is not None and augment.mixup_alpha > 0:
      x, y = mixup(r_mix, x, y, alpha=augment.mixup_alpha,
                   replicated=None if mesh is None else mesh_lib.replicated(mesh))

    def loss_and_aux(params):
      if trainable is not None:
        params = jax.tree.map(lambda t, p: p if t else jax.lax.stop_gradient(p), trainable, params)
      variables = {"params": params, "batch_stats": state.batch_stats}
      if model_train:
        (logits, _), updates = model.apply(variables, x, train=True, mutable=["batch_stats"],
                                           rngs={"dropout": r_drop})
        new_stats = updates.get("batch_stats", state.batch_stats)
      else:
        logits, _ = model.apply(variables, x, train=False)
        new_stats = state.batch_stats
      return loss_fn(logits, y), new_stats

    (loss, new_stats), grads = jax.value_and_grad(loss_and_aux, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if stats_trainable is not None:
      new_stats = jax.tree.map(lambda t, n, o: n if t else o, stats_trainable, new_stats,
                               state.batch_stats)
    # A NaN or Inf in any leaf makes its tree's global norm non-finite: two scalars to test
    # instead of one reduction per leaf. Updates too: a NaN learning rate or a blown-up Adam
    # moment gives finite grads, NaN params. (A finite tree whose squares overflow float32, norm
    # above ~1e19, also counts as non-finite: that step has diverged anyway.)
    grad_norm = optax.global_norm(grads)
    finite = (jnp.isfinite(loss) & jnp.isfinite(grad_norm)
              & jnp.isfinite(optax.global_norm(updates)))
    new = state.replace(params=params, batch_stats=new_stats, opt_state=opt_state)
    # A non-finite step keeps the old parameters; the loop sees `finite` and stops cleanly.
    new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
    new = new.replace(step=state.step + 1)
    return new, {"loss": loss, "finite": finite, "grad_norm": grad_norm}

  return step


def jit_train_step(step_fn, state_shardings, mesh):
  replicated = mesh_lib.replicated(mesh)
  return jax.jit(step_fn, donate_argnums=(0,),
                 in_shardings=(state_shardings, mesh_lib.batch_sharding(mesh), replicated),
                 out_shardings=(state_shardings, replicated))


def norm_on_mesh(norm: dict | None, mesh) -> jax.Array:
  """The feature statistics (`featurizer.norm_args`) as a global array every device holds."""
  return jax.make_array_from_process_local_data(mesh_lib.replicated(mesh),
                                                featurizer.norm_args(norm))


def make_predict(model, featurize, *, layers=()):
  """`predict(params, batch_stats, audio, norm=None) -> (logits, {layer: array})`, inference
  mode; `norm` as in the train step (None: the statistics `featurize` was made with)."""

  @jax.jit
  def predict(params, batch_stats, audio, norm=None):
    logits, out = model.apply({"params": params, "batch_stats": batch_stats},
                              featurize(audio, norm=norm), train=False)
    return logits, {name: out[name] for name in layers}

  return predict


def evaluate(predict, params, batch_stats, batches, mesh, *, num_batches=None, desc=None,
             norm=None):
  """Runs `predict` over finite eval batches; returns host arrays of the unpadded rows.

  Returns (logits, labels, indices, layers). Rows are gathered from every process, so each
  process sees the whole split (evaluation sets are small next to training sets).
  """
  logits_all, labels_all, index_all, layers_all = [], [], [], {}
  progress = tqdm(batches, total=num_batches, desc=desc, leave=False, disable=desc is None
                  or jax.process_index() != 0)
  for batch in progress:
    g = mesh_lib.to_global(batch, mesh)
    logits, layers = predict(params, batch_stats, g["audio"], norm)
    logits, layers, labels, mask, index = multihost_utils.process_allgather(
        (logits, layers, g["label"], g["mask"], g["index"]), tiled=True)
    keep = np.asarray(mask) > 0
    logits_all.append(np.asarray(logits)[keep])
    labels_all.append(np.asarray(labels)[keep])
    index_all.append(np.asarray(index)[keep])
    for k, v in layers.items():
      layers_all.setdefault(k, []).append(np.asarray(v)[keep])
  cat = functools.partial(np.concatenate, axis=0)
  return (cat(logits_all), cat(labels_all), cat(index_all),
          {k: cat(v) for k, v in layers_all.items()})


class TrainingDiverged(UserError):
  """The loss or gradients became non-finite; the last good checkpoint is kept."""


def check_finite(pending, last_good, ckpt_dir):
  """Raises `TrainingDiverged` if any pending step was non-finite (a host sync: call at log steps)."""
  for step, m in pending:
    if not bool(m["finite"]):
      where = f"step {last_good} in {ckpt_dir}" if last_good else "none was saved yet"
      raise TrainingDiverged(
          f"the loss or its gradients became non-finite at step {step} (loss {float(m['loss'])}); "
          f"the run stopped. Last good checkpoint: {where}. Lower config key 'optim.lr' or check "
          f"the data.")
