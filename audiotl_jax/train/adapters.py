"""Adapter-only checkpoints: the trainable leaves of a PETL run, tied to their backbone.

A PETL run changes a few hundred thousand of a backbone's ~86 M parameters; its result is stored
as just the trainable leaves (`adapter.npz`) plus `adapter.json` naming the backbone checkpoint and
a fingerprint of its parameters, and is loaded back onto that backbone only.
"""
import hashlib
import io
import json

from etils.epath import Path

import flax
import jax
import numpy as np

from audiotl_jax import fileio
from audiotl_jax.errors import UserError

ADAPTER_ARRAYS, ADAPTER_META = "adapter.npz", "adapter.json"


def fingerprint(params) -> str:
  """sha256 over every leaf's path, shape, dtype and bytes: which backbone this is, exactly."""
  h = hashlib.sha256()
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
  for key in sorted(flat):
    a = np.ascontiguousarray(np.asarray(jax.device_get(flat[key])))
    h.update(f"{key}|{a.shape}|{a.dtype}".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def save(directory: Path, variables: dict, masks: dict, metadata: dict,
                 backbone: dict) -> Path:
  """Writes the leaves of `variables` (params, batch_stats) where `masks` is True.

  `backbone` is {"path": checkpoint path, "fingerprint": fingerprint(its params)}; it goes into
  the metadata so `load` can refuse any other backbone.
  """
  directory = fileio.path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  arrays = {}
  for collection, tree in variables.items():
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep="/")
    keep = flax.traverse_util.flatten_dict(flax.core.unfreeze(masks[collection]), sep="/")
    arrays.update({f"{collection}/{k}": np.asarray(jax.device_get(v))
                   for k, v in flat.items() if keep[k]})
  buf = io.BytesIO()  # then one write: a rename on disk, a single object on object storage
  np.savez(buf, **arrays)
  fileio.write_bytes(directory / ADAPTER_ARRAYS, buf.getvalue())
  meta = dict(metadata, backbone=backbone, num_adapter_values=int(sum(a.size for a in
                                                                      arrays.values())))
  fileio.write_text(directory / ADAPTER_META, json.dumps(meta, indent=2) + "\n")
  return directory


def load(directory: Path, variables: dict, *, backbone_params) -> tuple[dict, dict]:
  """Overlays an adapter-only checkpoint on a model's variables -> (variables, metadata).

  `variables` are {params, batch_stats} of the model the adapter was trained with, its added
  modules included (fresh from `init`, then the backbone transplanted in), so every saved leaf
  has a place. `backbone_params` are the backbone checkpoint's own parameters: a backbone whose
  fingerprint differs from the recorded one is refused.
  """
  directory = fileio.path(directory)
  if not (directory / ADAPTER_META).exists():
    raise UserError(f"{directory} holds no adapter checkpoint ({ADAPTER_META} is missing)")
  meta = json.loads((directory / ADAPTER_META).read_text())
  got = fingerprint(backbone_params)
  want = meta["backbone"]["fingerprint"]
  if got != want:
    raise UserError(
        f"the adapter in {directory} was trained on the backbone {meta['backbone']['path']} "
        f"(fingerprint {want[:12]}); the backbone given has fingerprint {got[:12]}: load it onto "
        f"the checkpoint it was trained with")
  arrays = np.load(io.BytesIO((directory / ADAPTER_ARRAYS).read_bytes()))
  out = {}
  for collection in ("params", "batch_stats"):
    flat = flax.traverse_util.flatten_dict(
        flax.core.unfreeze(variables.get(collection, {})), sep="/")
    for key in arrays.files:
      c, _, path = key.partition("/")
      if c != collection:
        continue
      if path not in flat:
        raise UserError(f"adapter leaf {path!r} of {directory} has no place in the model: was it "
                        f"trained with another strategy ({meta.get('strategy')})?")
      if tuple(flat[path].shape) != tuple(arrays[key].shape):
        raise UserError(f"adapter leaf {path!r} of {directory} has shape {arrays[key].shape}, "
                        f"the model needs {tuple(flat[path].shape)}")
      flat[path] = arrays[key]
    out[collection] = flax.traverse_util.unflatten_dict(flat, sep="/") if flat else {}
  return out, meta
