"""A checkpoint as a function: the one place a model is rebuilt from checkpoint metadata.

`embed`, `score`, adapter loading (and, later, the Python and HEAR APIs) all go through
`load_for_inference`: metadata says which registry model, which added transfer modules (a
fine-tuned checkpoint may carry adapters, LoRA or prompts), which frontend and normalisation.

Layer readout. A layer is a name of the model's output dict, optionally `name:pooling` (the file
is then `<name>_<pooling>.npy`); `pooling` is the default for the others. Pooling is a named
choice checked against the layer's rank:
  rank 2 (batch, features)            vectors (`embedding`, `pooled`, `logits`; AST `cls`, `dist`,
                                      `cls_dist_mean`, `patch_mean`): `none`, the default for them
  rank 3 (batch, tokens, features)    token sequences (AST `tokens`, [cls, dist, patches...]):
                                      `cls`, `dist`, `cls_dist_mean`, `patch_mean`, `mean`, `max`
  rank 4 (batch, time, freq, chan.)   CNN feature maps (`block1`...): global `mean`, `max`,
                                      `meanmax` (their sum, as PANNs), `panns` (mean over freq,
                                      then max + mean over time), `time_mean`, `time_max` (over
                                      time only, keeping freq x channels)
"""
import json
from typing import Any, NamedTuple

from etils.epath import Path
import jax
import jax.numpy as jnp
import ml_collections

from audiotl_jax import fileio, models
from audiotl_jax.errors import UserError, unknown_name
from audiotl_jax.features import featurizer
from audiotl_jax.models import transfer
from audiotl_jax.train import adapters, checkpoints

_MIDDLE = lambda x: tuple(range(1, x.ndim - 1))
POOLING = {  # name -> (ranks it applies to, (batch, ...) -> (batch, features))
    "none": ((2,), lambda x: x),
    "mean": ((3, 4), lambda x: x.mean(_MIDDLE(x))),
    "max": ((3, 4), lambda x: x.max(_MIDDLE(x))),
    "meanmax": ((4,), lambda x: x.mean((1, 2)) + x.max((1, 2))),
    "panns": ((4,), lambda x: x.mean(2).max(1) + x.mean(2).mean(1)),
    "time_mean": ((4,), lambda x: x.mean(1).reshape(x.shape[0], -1)),
    "time_max": ((4,), lambda x: x.max(1).reshape(x.shape[0], -1)),
    "cls": ((3,), lambda x: x[:, 0]),
    "dist": ((3,), lambda x: x[:, 1]),
    "cls_dist_mean": ((3,), lambda x: x[:, :2].mean(1)),
    "patch_mean": ((3,), lambda x: x[:, 2:].mean(1)),
}


def output_name(spec: str) -> str:
  """The file stem of a layer spec: `name`, or `name_pooling` for `name:pooling`."""
  layer, _, how = spec.partition(":")
  return f"{layer}_{how}" if how else layer


def resolve_layers(specs, default: str, shapes: dict, model_name: str) -> dict:
  """{output name: (layer, pooling)} with every pooling checked against its layer's rank."""
  if default not in POOLING:
    raise unknown_name("pooling", default, POOLING)
  out = {}
  for spec in specs:
    layer, _, how = spec.partition(":")
    if layer not in shapes:
      raise unknown_name(f"layer of {model_name}", layer, shapes)
    rank = len(shapes[layer].shape)
    how = how or (default if rank > 2 else "none")
    if how not in POOLING:
      raise unknown_name("pooling", how, POOLING)
    if rank not in POOLING[how][0]:
      valid = sorted(k for k, (ranks, _) in POOLING.items() if rank in ranks)
      raise UserError(f"pooling {how!r} does not apply to layer {layer!r} of shape "
                      f"{tuple(shapes[layer].shape)}; for rank {rank} use one of "
                      f"{', '.join(valid)}")
    out[output_name(spec)] = (layer, how)
  return out


def model_from_metadata(meta: dict):
  """The registry model a checkpoint's metadata names, with its added transfer modules."""
  petl = meta.get("petl")
  if petl:
    petl = transfer.Petl(**{k: tuple(v) if isinstance(v, list) else v for k, v in petl.items()})
    return models.get_model(meta["model"], num_classes=meta["num_classes"], petl=petl)
  return models.get_model(meta["model"], num_classes=meta["num_classes"])


def input_frames(meta: dict, clip_seconds: float | None = None) -> int:
  """Feature frames the checkpoint's frontend makes from a clip (its own length by default)."""
  fc = ml_collections.ConfigDict(meta["frontend"])
  seconds = clip_seconds or meta["clip_seconds"]
  return featurizer.feature_frames(fc, int(round(seconds * fc.sample_rate)))


class Inference(NamedTuple):
  model: Any
  variables: dict        # {params, batch_stats}, host arrays
  metadata: dict
  featurize: Any         # int16 audio -> normalised features, as in training
  frontend: Any          # the frontend config block
  step_dir: Path


def load_for_inference(checkpoint: Path) -> Inference:
  """A workdir, checkpoints/ folder or step folder -> the model and what it needs to run."""
  variables, meta, step_dir = checkpoints.load_model(checkpoint)
  fc = ml_collections.ConfigDict(meta["frontend"])
  return Inference(model_from_metadata(meta), variables, meta,
                   featurizer.make_featurizer(fc, meta["norm"]), fc, step_dir)


def load_adapted(adapter_dir, backbone=None):
  """An adapter-only checkpoint on its backbone -> (model, variables, metadata).

  `backbone` (a checkpoint path) defaults to the one recorded in the adapter's metadata; any
  other backbone is refused by its fingerprint.
  """
  meta_path = fileio.path(adapter_dir) / adapters.ADAPTER_META
  if not meta_path.exists():
    raise UserError(f"{adapter_dir} holds no adapter checkpoint ({meta_path.name} is missing)")
  meta = json.loads(meta_path.read_text())
  source, _, _ = checkpoints.load_model(fileio.path(backbone or meta["backbone"]["path"]))
  model = model_from_metadata(meta)
  fc = ml_collections.ConfigDict(meta["frontend"])
  fresh = jax.jit(lambda: model.init(jax.random.PRNGKey(0),
                                     jnp.zeros((1, input_frames(meta), fc.n_mels)), train=False))()
  params, _ = transfer.transplant(source["params"], jax.device_get(fresh["params"]),
                                  resize=transfer.resize_leaf)
  stats, _ = transfer.transplant(source.get("batch_stats", {}),
                                 jax.device_get(fresh.get("batch_stats", {})))
  variables, meta = adapters.load(adapter_dir, {"params": params, "batch_stats": stats},
                                  backbone_params=source["params"])
  return model, variables, meta
