"""Import AST weights: the official PyTorch checkpoint and the Hugging Face layout.

Both become our Flax parameters (`models/ast.py`), with every shape checked against the target
model and an error naming the first key that does not fit. Position embeddings made for another
input length or stride are resized as the official code does.

  * Official (https://github.com/YuanGongND/ast, e.g. `audioset_10_10_0.4593.pth`): a
    DataParallel state dict, `module.v.*` (timm DeiT: fused `qkv`) and `module.mlp_head.{0,1}`.
    timm's ImageNet heads `module.v.head*` / `module.v.head_dist*` are unused and dropped.
    Reading a `.pth` needs torch (`pip install audiotl-jax[torch]`).
  * Hugging Face `ASTModel` (`embeddings.*`, `encoder.layer.N.*`, `layernorm.*`) and
    `ASTForAudioClassification` (the same under `audio_spectrogram_transformer.`, plus
    `classifier.layernorm` / `classifier.dense`), from `.safetensors` via the `safetensors`
    package's numpy API, or from `.bin` with torch.

Linear weights are (out, in) in PyTorch and (in, out) here; the patch conv goes from
(width, 1, kf, kt) to (kf, kt, 1, width).
"""
from pathlib import Path
from typing import Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np

from audiotl_jax.errors import UserError
from audiotl_jax.models import ast as ast_lib

_DROPPED = ("module.v.head.", "module.v.head_dist.")


def torch_load(path: Path, what: str, *, noun: str = "checkpoint", safe_globals=()):
  """`torch.load(weights_only=True)` of a PyTorch pickle, with one-line errors naming `what`.

  `safe_globals`: the few extra globals a file may refer to (numpy arrays in VGGish's PCA file);
  nothing else, no arbitrary code, is unpickled.
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError(f"reading {path.name} (a PyTorch pickle) needs torch: "
                    f"pip install 'audiotl-jax[torch]'") from None
  try:
    with torch.serialization.safe_globals(list(safe_globals)):
      return torch.load(str(path), map_location="cpu", weights_only=True)
  except Exception as e:  # unpickling errors of every kind: a truncated or foreign file
    first = str(e).splitlines()[0] if str(e) else ""
    raise UserError(f"{what} {path}: not a readable PyTorch {noun} "
                    f"({type(e).__name__}: {first})") from None


def read_state_dict(path) -> dict[str, np.ndarray]:
  """A `.safetensors`, `.pth`/`.pt`/`.bin` file -> {key: numpy array}."""
  path = Path(path)
  if not path.exists():
    raise UserError(f"checkpoint file {path} does not exist")
  if path.suffix == ".safetensors":
    try:
      from safetensors.numpy import load_file
    except ImportError:
      raise UserError("reading .safetensors needs the safetensors package: "
                      "pip install 'audiotl-jax[import]'") from None
    try:
      return dict(load_file(str(path)))
    except Exception as e:  # safetensors raises its own error types for a damaged file
      raise UserError(f"checkpoint file {path}: not a readable safetensors file "
                      f"({type(e).__name__}: {e})") from None
  state = torch_load(path, "checkpoint file")
  state = state.get("state_dict", state) if isinstance(state, dict) else state
  return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}


class _Tracking(dict):
  """A state dict that remembers which keys were read, so leftovers can be reported."""

  def __init__(self, *args):
    super().__init__(*args)
    self.used = set()

  def __getitem__(self, key):
    self.used.add(key)
    return super().__getitem__(key)


def _linear(sd, prefix):
  return {"kernel": sd[prefix + "weight"].T, "bias": sd[prefix + "bias"]}


def _norm(sd, prefix):
  return {"scale": sd[prefix + "weight"], "bias": sd[prefix + "bias"]}


def _official_blocks(sd, depth):
  blocks = {}
  for i in range(depth):
    p = f"module.v.blocks.{i}."
    qkv_w, qkv_b = sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"]
    width = qkv_w.shape[1]
    split = lambda a, j: a[j * width:(j + 1) * width]
    blocks[f"block{i + 1}"] = {
        "norm1": _norm(sd, p + "norm1."), "norm2": _norm(sd, p + "norm2."),
        "attn": {name: {"kernel": split(qkv_w, j).T, "bias": split(qkv_b, j)}
                 for j, name in enumerate(("query", "key", "value"))}
                | {"out": _linear(sd, p + "attn.proj.")},
        "fc1": _linear(sd, p + "mlp.fc1."), "fc2": _linear(sd, p + "mlp.fc2."),
    }
  return blocks


def _hf_blocks(sd, depth, root):
  blocks = {}
  for i in range(depth):
    p = f"{root}encoder.layer.{i}."
    blocks[f"block{i + 1}"] = {
        "norm1": _norm(sd, p + "layernorm_before."), "norm2": _norm(sd, p + "layernorm_after."),
        "attn": {"query": _linear(sd, p + "attention.attention.query."),
                 "key": _linear(sd, p + "attention.attention.key."),
                 "value": _linear(sd, p + "attention.attention.value."),
                 "out": _linear(sd, p + "attention.output.dense.")},
        "fc1": _linear(sd, p + "intermediate.dense."), "fc2": _linear(sd, p + "output.dense."),
    }
  return blocks


def detect_layout(sd: Mapping[str, np.ndarray]) -> str:
  if any(k.startswith("module.v.") for k in sd):
    return "official"
  if any(k.startswith(("audio_spectrogram_transformer.", "embeddings.patch_embeddings"))
         for k in sd):
    return "huggingface"
  raise UserError(f"not an AST state dict (neither `module.v.*` nor Hugging Face keys); first "
                  f"keys: {', '.join(list(sd)[:5])}")


def head_classes(sd: Mapping[str, np.ndarray]) -> int | None:
  """The number of classes of the checkpoint's own head, or None when it has none."""
  for key in ("module.mlp_head.1.weight", "classifier.dense.weight"):
    if key in sd:
      return int(np.shape(sd[key])[0])
  return None


def _depth(sd, pattern):
  found = {int(k[len(pattern):].split(".")[0]) for k in sd if k.startswith(pattern)}
  return max(found) + 1 if found else 0


def convert(sd: Mapping[str, np.ndarray], target_shapes: dict, *,
            source_grid: tuple[int, int] | None = None) -> tuple[dict, list[str]]:
  """A state dict -> our params, shaped like `target_shapes` (from `models.param_shapes`).

  `source_grid` is the checkpoint's (frequency, time) patch grid; by default its frequency count
  is taken to equal the target's and the time count follows from the number of patches. The head
  is imported when its class count matches the target's, else left fresh. Returns (params, notes).
  """
  sd = _Tracking({k: np.asarray(v) for k, v in sd.items()})
  layout = detect_layout(sd)
  notes = []
  try:
    if layout == "official":
      depth = _depth(sd, "module.v.blocks.")
      ours = {"embedding": {
          "proj": {"kernel": sd["module.v.patch_embed.proj.weight"].transpose(2, 3, 1, 0),
                   "bias": sd["module.v.patch_embed.proj.bias"]},
          "cls_token": sd["module.v.cls_token"], "dist_token": sd["module.v.dist_token"]},
          "encoder_norm": _norm(sd, "module.v.norm."), **_official_blocks(sd, depth)}
      pos = sd["module.v.pos_embed"]
      head = ({"norm": _norm(sd, "module.mlp_head.0."), "dense": _linear(sd, "module.mlp_head.1.")}
              if "module.mlp_head.1.weight" in sd else None)
    else:
      root = "audio_spectrogram_transformer." if any(
          k.startswith("audio_spectrogram_transformer.") for k in sd) else ""
      depth = _depth(sd, f"{root}encoder.layer.")
      e = f"{root}embeddings."
      ours = {"embedding": {
          "proj": {"kernel": sd[e + "patch_embeddings.projection.weight"].transpose(2, 3, 1, 0),
                   "bias": sd[e + "patch_embeddings.projection.bias"]},
          "cls_token": sd[e + "cls_token"], "dist_token": sd[e + "distillation_token"]},
          "encoder_norm": _norm(sd, f"{root}layernorm."), **_hf_blocks(sd, depth, root)}
      pos = sd[e + "position_embeddings"]
      head = ({"norm": _norm(sd, "classifier.layernorm."),
               "dense": _linear(sd, "classifier.dense.")}
              if "classifier.dense.weight" in sd else None)
  except KeyError as e:
    raise UserError(f"the {layout} AST state dict lacks key {e.args[0]!r}") from None

  dropped = [k for k in sd if layout == "official" and k.startswith(_DROPPED)]
  unknown = [k for k in sd if k not in sd.used and k not in dropped]
  if unknown:
    raise UserError(f"unexpected keys in the {layout} AST state dict: {', '.join(unknown[:5])}")
  if dropped:
    notes.append(f"dropped timm's unused heads ({len(dropped)} tensors)")

  # Position embeddings: (1, 2 + f * t, width) -> tokens + a (1, f, t, width) grid, resized.
  target_grid = target_shapes["embedding"]["pos_embed"].shape
  num_patches = pos.shape[1] - ast_lib.NUM_TOKENS
  f_src, t_src = source_grid or (target_grid[1], num_patches // max(target_grid[1], 1))
  if f_src * t_src != num_patches:
    raise UserError(f"the checkpoint has {num_patches} patch positions, not a {f_src} x {t_src} "
                    f"grid: pass source_grid=(frequency, time) patches")
  grid = pos[:, ast_lib.NUM_TOKENS:].reshape(1, f_src, t_src, pos.shape[-1])
  if (f_src, t_src) != tuple(target_grid[1:3]):
    notes.append(f"resized position embeddings {f_src}x{t_src} -> "
                 f"{target_grid[1]}x{target_grid[2]}")
    grid = ast_lib.resize_pos_embed(grid, target_grid[1], target_grid[2])
  ours["embedding"]["pos_embed"] = grid
  ours["embedding"]["token_pos_embed"] = pos[:, :ast_lib.NUM_TOKENS]

  target_head = target_shapes.get("head", {})
  if head is not None and _shapes(head) == _shapes(target_head):
    ours["head"] = head
  elif target_head:
    notes.append("head left fresh (the checkpoint's has another shape or is absent)")
  return _check(ours, target_shapes, layout), notes


def _shapes(tree):
  return jax.tree.map(lambda a: tuple(a.shape), tree)


def _check(ours: dict, target: dict, layout: str) -> dict:
  """Every target leaf must come with the target's shape; the first miss is named."""
  flat_ours = flax.traverse_util.flatten_dict(ours, sep="/")
  flat_target = flax.traverse_util.flatten_dict(flax.core.unfreeze(target), sep="/")
  out = {}
  for key, leaf in flat_target.items():
    if key.startswith("head/") and key not in flat_ours:
      continue  # A fresh head is fine; the caller's init provides it.
    if key not in flat_ours:
      raise UserError(f"the {layout} checkpoint has nothing for parameter {key!r} (is it deeper "
                      f"or shallower than the model?)")
    value = np.asarray(flat_ours[key], np.float32)
    if tuple(value.shape) != tuple(leaf.shape):
      raise UserError(f"parameter {key!r}: the {layout} checkpoint gives shape "
                      f"{tuple(value.shape)}, the model needs {tuple(leaf.shape)} (another "
                      f"width, patch size or variant?)")
    out[key] = value
  extra = sorted(set(flat_ours) - set(flat_target))
  if extra:
    raise UserError(f"the {layout} checkpoint has parameters the model lacks, first {extra[0]!r} "
                    f"(is it deeper than the model?)")
  return flax.traverse_util.unflatten_dict(out, sep="/")


def import_ast(path, model, *, frames: int, mel_bins: int = 128,
               source_grid: tuple[int, int] | None = None, seed: int = 0):
  """A checkpoint file (or its state dict, already read) -> complete params for `model` (fresh
  head where none fits) and notes."""
  sd = path if isinstance(path, Mapping) else read_state_dict(path)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                             jnp.zeros((1, frames, mel_bins)), train=False))
  params, notes = convert(sd, shapes["params"], source_grid=source_grid)
  if "head" not in params:
    fresh = jax.jit(lambda: model.init(jax.random.key(seed), jnp.zeros((1, frames, mel_bins)),
                                       train=False))()
    params["head"] = jax.device_get(fresh["params"]["head"])
  return params, notes
