"""Import the released PANNs weights (https://zenodo.org/record/3987831: `Cnn14_mAP=0.431.pth`,
`Cnn10_mAP=0.380.pth`, `Cnn6_mAP=0.343.pth`, `Cnn14_16k_mAP=0.438.pth`).

A file is `{'model': state_dict, ...}` as the official training script saves it. Keys and the
layout change:

  bn0.*                          -> bn0                 (BatchNorm over the 64 mel bins)
  conv_block{K}.conv{I}.weight   -> blockK/convI/kernel (OIHW -> HWIO)
  conv_block{K}.bn{I}.*          -> blockK/bnI
  fc1.{weight,bias}              -> embedding           ((out, in) -> (in, out))
  fc_audioset.{weight,bias}      -> head

BatchNorm `weight`/`bias` become params `scale`/`bias`, `running_mean`/`running_var` the
batch_stats `mean`/`var`; `num_batches_tracked` is dropped. The frontend's buffers
(`spectrogram_extractor.stft.conv_{real,imag}.weight`, `logmel_extractor.melW`) are not loaded:
they are compared with `features.panns`'s for the model's set-up, so a 16 kHz file imported for
the 32 kHz set-up (or the reverse) stops with a line saying which set-up the file is. Any
missing, misshapen or unexpected key stops the import with a line naming the first one.
"""
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import flax
import numpy as np

from audiotl_jax import models
from audiotl_jax.errors import UserError
from audiotl_jax.features import panns as frontend_lib
from audiotl_jax.models import importers
from audiotl_jax.models import panns as panns_lib

BUFFERS = {
    "spectrogram_extractor.stft.conv_real.weight": 0,
    "spectrogram_extractor.stft.conv_imag.weight": 1,
    "logmel_extractor.melW": 2,
}
BUFFER_TOLERANCE = 1e-5
_BN = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


class Imported(NamedTuple):
  variables: dict          # {"params", "batch_stats"} as float32 numpy
  num_classes: int         # the file's head
  frontend: dict           # features.panns.SETUPS entry of the model, plus kind="panns"
  notes: list
  frames: int              # feature frames of a 10 s clip at the set-up


def read_checkpoint(path) -> dict[str, np.ndarray]:
  """A `.pth` of the official layout (`{'model': state_dict}`, or a bare state dict) -> numpy."""
  path = Path(path)
  state = importers.torch_load(path, "weights file")
  if isinstance(state, dict) and isinstance(state.get("model"), Mapping):
    state = state["model"]
  # torch_load returned, so torch is importable; it is imported only where a .pth is read.
  import torch  # pylint: disable=g-import-not-at-top
  if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
    raise UserError(f"weights file {path}: neither {{'model': state_dict}} nor a state dict of "
                    f"tensors")
  return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}


def official_key(collection: str, path: str) -> str:
  """Our `params`/`batch_stats` path (`block2/bn1/mean`) -> the official state-dict key."""
  top, *rest = path.split("/")
  leaf = rest[-1]
  if top == "bn0":
    return f"bn0.{_BN[leaf]}"
  if top.startswith("block"):
    module = rest[0]
    suffix = "weight" if module.startswith("conv") else _BN[leaf]
    return f"conv_block{top[len('block'):]}.{module}.{suffix}"
  official = {"embedding": "fc1", "head": "fc_audioset"}[top]
  return f"{official}.{'weight' if leaf == 'kernel' else 'bias'}"


def _to_torch_layout(value_shape: tuple, path: str) -> tuple:
  """The shape the official key has for one of our leaves' shapes."""
  if path.endswith("kernel") and len(value_shape) == 4:
    kh, kw, cin, cout = value_shape
    return (cout, cin, kh, kw)
  if path.endswith("kernel"):
    return tuple(reversed(value_shape))
  return tuple(value_shape)


def _from_torch(value: np.ndarray, path: str) -> np.ndarray:
  if path.endswith("kernel"):
    value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T
  return np.ascontiguousarray(value, np.float32)


def check_frontend(sd: Mapping[str, np.ndarray], setup: str, model_name: str) -> list[str]:
  """Compares the file's STFT and mel buffers with set-up `setup`'s; notes, or a UserError."""
  present = [k for k in BUFFERS if k in sd]
  if not present:
    return [f"the file carries no STFT or mel buffers: its frontend set-up was not checked "
            f"({model_name} assumes {frontend_lib.describe(setup)})"]
  matches = [name for name in frontend_lib.SETUPS if _buffers_match(sd, name)]
  if setup in matches:
    return []
  if matches:
    others = [f"{panns_lib.FAMILY}:{v}" for v, f in panns_lib.VARIANTS.items()
              if f.get("frontend_setup", "32k") == matches[0] and v != "tiny"]
    raise UserError(f"the weights file is for {frontend_lib.describe(matches[0])}, but "
                    f"{model_name} is {frontend_lib.describe(setup)}: import it as "
                    f"{' or '.join(others)}")
  key = present[0]
  known = "; ".join(frontend_lib.describe(n) for n in frontend_lib.SETUPS)
  raise UserError(f"the weights file's {key!r} (shape {tuple(np.shape(sd[key]))}) matches no "
                  f"PANNs frontend set-up ({known})")


def _buffers_match(sd, name: str) -> bool:
  s = frontend_lib.SETUPS[name]
  want = (*frontend_lib.stft_kernels(s["n_fft"]),
          frontend_lib.mel_matrix(s["sample_rate"], s["n_fft"], s["n_mels"], s["fmin"], s["fmax"]))
  for key, index in BUFFERS.items():
    if key not in sd:
      continue
    got = np.asarray(sd[key], np.float64)
    if got.shape != want[index].shape or np.max(np.abs(got - want[index])) > BUFFER_TOLERANCE:
      return False
  return True


def _module_rank(path: str, blocks: tuple[str, ...]) -> tuple:
  """The official state dict's order (bn0, then conv1, bn1, conv2, bn2 of each block, fc1,
  fc_audioset; weight, bias, running_mean, running_var), so the first error is the shallowest."""
  top, *rest = path.split("/")
  order = ("bn0", *blocks, "embedding", "head")
  module = rest[0] if len(rest) > 1 else ""
  number = int(module[-1]) if module[-1:].isdigit() else 0
  leaf = ("kernel", "scale", "bias", "mean", "var").index(rest[-1])
  return (order.index(top) if top in order else len(order), number,
          not module.startswith("conv"), leaf)


def convert(sd: Mapping[str, Any], target: dict, *, model_name: str,
            blocks: tuple[str, ...], setup: str) -> tuple[dict, list[str]]:
  """A PANNs state dict -> our {params, batch_stats} shaped like `target` (`param_shapes`)."""
  sd = {k: np.asarray(v) for k, v in sd.items() if not k.endswith(".num_batches_tracked")}
  leaves = []
  for collection in ("params", "batch_stats"):
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(target.get(collection, {})),
                                           sep="/")
    leaves += [(collection, path, tuple(leaf.shape)) for path, leaf in flat.items()]
  leaves.sort(key=lambda c: _module_rank(c[1], blocks))
  out = {"params": {}, "batch_stats": {}}
  for collection, path, shape in leaves:
    key = official_key(collection, path)
    if key not in sd:
      raise UserError(f"the PANNs state dict lacks key {key!r} (shape "
                      f"{_to_torch_layout(shape, path)}), which {model_name} needs for "
                      f"{collection}/{path}: a damaged file or another model?")
    want = _to_torch_layout(shape, path)
    if tuple(sd[key].shape) != want:
      raise UserError(f"the PANNs state dict's {key!r} has shape {tuple(sd[key].shape)}, "
                      f"{model_name} needs {want}: a damaged file or another model?")
    out[collection][path] = _from_torch(sd[key], path)
  used = {official_key(c, p) for c, p, _ in leaves}
  extra = [k for k in sd if k not in used and k not in BUFFERS]
  if extra:
    raise UserError(f"the PANNs state dict has key {extra[0]!r} (shape "
                    f"{tuple(sd[extra[0]].shape)}) that {model_name} lacks: another model?")
  notes = check_frontend(sd, setup, model_name)
  variables = {c: flax.traverse_util.unflatten_dict(v, sep="/") for c, v in out.items()}
  return variables, notes


def head_classes(sd: Mapping[str, Any]) -> int:
  if "fc_audioset.weight" not in sd:
    raise UserError("the PANNs state dict lacks key 'fc_audioset.weight' (the AudioSet head): "
                    "a damaged file or not a PANNs checkpoint?")
  return int(np.shape(sd["fc_audioset.weight"])[0])


def import_panns(weights, model_name: str) -> Imported:
  """A weights file (or its state dict, already read) -> `Imported` for `panns:<variant>`."""
  sd = weights if isinstance(weights, Mapping) else read_checkpoint(weights)
  num_classes = head_classes(sd)
  model = models.get_model(model_name, num_classes=num_classes)
  setup = model.frontend_setup
  s = frontend_lib.setup(setup)
  shapes = models.param_shapes(model, frames=frontend_lib.num_frames(s["sample_rate"],
                                                                     s["hop_length"]),
                               mel_bins=s["n_mels"])
  variables, notes = convert(sd, shapes, model_name=model_name, blocks=model.block_names(),
                             setup=setup)
  return Imported(variables, num_classes, {"kind": "panns", **s}, notes,
                  frontend_lib.num_frames(10 * s["sample_rate"], s["hop_length"]))
