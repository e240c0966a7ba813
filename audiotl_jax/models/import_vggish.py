"""Import VGGish weights in torchvggish's layout, and optionally the release's PCA parameters.

  * Weights (`vggish-10086976.pth`, https://github.com/harritaylor/torchvggish releases): a
    state dict of `features.N.{weight,bias}` for the convs of its Sequential (indices 0, 3, 6, 8,
    11, 13 for vggish:base: ReLUs and max pools sit between them) and `embeddings.{0,2,4}.*` for
    the three Linear layers. Convs go from OIHW to HWIO, Linear weights from (out, in) to
    (in, out). torchvggish flattens the last conv map in NHWC order, which is ours, so the first
    fc's rows need no permutation.
  * PCA (`vggish_pca_params-970ea276.pth`, a pickle of numpy arrays, or the TensorFlow release's
    `vggish_pca_params.npz`): `pca_eigen_vectors` (128, 128) and `pca_means` (128,) or (128, 1).
    They become `batch_stats/pca_eigen_vectors` and `batch_stats/pca_means`, which make the model
    return its post-processed layers (see `models/vggish.py`).

VGGish has no classifier. The imported head is the identity on the 128-d embedding, so `logits`
equal `embedding`: deterministic, and honest about there being no source classes (a fresh random
head would feed noise to LEEP and NCE). Fine-tuning replaces it like any head.
"""
import importlib
from pathlib import Path
from typing import Mapping

import flax
import numpy as np

from audiotl_jax import models
from audiotl_jax.errors import UserError
from audiotl_jax.models import vggish as vggish_lib
from audiotl_jax.models import importers
from audiotl_jax.models.importers import read_state_dict


def torch_layout(convs, fc_layers: int = 3) -> dict[str, str]:
  """Our parameter path (`block3/conv2`, `embedding/fc1`) -> torchvggish's module prefix.

  The Sequential holds conv, ReLU per conv and one max pool per block, so the conv indices
  follow from the convs per block.
  """
  out, index = {}, 0
  for b, count in enumerate(convs):
    for c in range(count):
      out[f"block{b + 1}/conv{c + 1}"] = f"features.{index}."
      index += 2
    index += 1
  for i in range(fc_layers):
    out[f"embedding/fc{i + 1}"] = f"embeddings.{2 * i}."
  return out


def convert(sd: Mapping[str, np.ndarray], target: dict, convs) -> dict:
  """A torchvggish state dict -> our params for every target leaf but the head.

  `target` is the model's params tree of shapes (`models.param_shapes(...)["params"]`). The first
  missing, unexpected or misshapen key is named in a one-line `UserError`.
  """
  flat_target = flax.traverse_util.flatten_dict(flax.core.unfreeze(target), sep="/")
  layout = torch_layout(convs, sum(1 for k in flat_target if k.startswith("embedding/") and
                                   k.endswith("/kernel")))
  params, used = {}, set()
  for ours, theirs in layout.items():
    for leaf, suffix in (("kernel", "weight"), ("bias", "bias")):
      key, path = theirs + suffix, f"{ours}/{leaf}"
      if key not in sd:
        raise UserError(f"the VGGish state dict lacks key {key!r} (for {path}; is it torchvggish's "
                        f"layout, of this variant?)")
      value = np.asarray(sd[key], np.float32)
      used.add(key)
      if leaf == "kernel":  # conv OIHW -> HWIO; Linear (out, in) -> (in, out)
        value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T
      need = tuple(flat_target[path].shape)
      if value.shape != need:
        raise UserError(f"VGGish key {key!r} has shape {tuple(np.shape(sd[key]))}, which gives "
                        f"{value.shape} for {path}; the model needs {need} (another variant, or "
                        f"an input of other than 64 mel bands?)")
      params[path] = value
  extra = [k for k in sd if k not in used]
  if extra:
    raise UserError(f"unexpected key in the VGGish state dict: {extra[0]!r} "
                    f"(shape {tuple(np.shape(sd[extra[0]]))}); {len(extra)} in all")
  return flax.traverse_util.unflatten_dict(params, sep="/")


def identity_head(dim: int) -> dict:
  return {"kernel": np.eye(dim, dtype=np.float32), "bias": np.zeros(dim, np.float32)}


def read_pca(path) -> dict[str, np.ndarray]:
  """A PCA parameter file (.pth pickle of numpy arrays or tensors, or .npz) -> numpy arrays."""
  path = Path(path)
  if not path.is_file():
    raise UserError(f"PCA file {path} {'is a directory' if path.is_dir() else 'does not exist'}")
  if path.suffix == ".npz":
    try:
      with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
    except Exception as e:  # a truncated or foreign file: numpy raises several error types
      raise UserError(f"PCA file {path}: not a readable .npz ({type(e).__name__}: {e})") from None
  # The release pickles numpy arrays, which torch's safe loader refuses unless these few numpy
  # globals are allowed.
  state = importers.torch_load(path, "PCA file", noun="pickle",
                               safe_globals=_numpy_globals())
  if not isinstance(state, Mapping):
    raise UserError(f"PCA file {path} holds a {type(state).__name__}, not a dict of arrays")
  return {k: v.numpy() if hasattr(v, "numpy") else np.asarray(v) for k, v in state.items()}


def _numpy_globals() -> list:
  """What a pickled float ndarray refers to, under numpy 1's and numpy 2's module names."""
  names = ("numpy.core.multiarray", "numpy._core.multiarray")
  try:  # numpy 2's home of the functions; numpy 1 has only the old one
    module = importlib.import_module(names[1])
  except ImportError:
    module = importlib.import_module(names[0])
  allowed = [np.ndarray, np.dtype]
  allowed += [type(np.dtype(t)) for t in (np.float32, np.float64)]
  for attr in ("_reconstruct", "scalar"):
    allowed += [(getattr(module, attr), f"{name}.{attr}") for name in names]
  return allowed


def convert_pca(pca: Mapping[str, np.ndarray], dim: int) -> dict[str, np.ndarray]:
  """{pca_eigen_vectors, pca_means} -> float32 (dim, dim) and (dim,), checked."""
  missing = [k for k in vggish_lib.PCA_KEYS if k not in pca]
  if missing:
    raise UserError(f"the PCA parameters lack key {missing[0]!r} (found: "
                    f"{', '.join(map(str, pca)) or 'nothing'})")
  vectors = np.asarray(pca["pca_eigen_vectors"], np.float32)
  means = np.asarray(pca["pca_means"], np.float32)
  if vectors.shape != (dim, dim):
    raise UserError(f"PCA key 'pca_eigen_vectors' has shape {vectors.shape}; the model's "
                    f"embedding needs ({dim}, {dim})")
  if means.shape not in ((dim,), (dim, 1)):
    raise UserError(f"PCA key 'pca_means' has shape {means.shape}; the model's embedding needs "
                    f"({dim},) or ({dim}, 1)")
  return {"pca_eigen_vectors": vectors, "pca_means": means.reshape(dim)}


def import_vggish(weights, model, *, pca=None) -> tuple[dict, list[str]]:
  """A weights file or state dict (and optionally PCA parameters: a file or a dict) -> the
  model's complete variables {params, batch_stats} and notes. `model.num_classes` must equal
  its `embedding_dim`: the head is the identity."""
  if model.num_classes != model.embedding_dim:
    raise UserError(f"an imported VGGish has an identity head: num_classes must be "
                    f"{model.embedding_dim}, got {model.num_classes}")
  sd = weights if isinstance(weights, Mapping) else read_state_dict(weights)
  target = models.param_shapes(model, *vggish_lib.DEFAULT_INPUT)["params"]
  params = convert(sd, target, model.convs)
  params["head"] = identity_head(model.embedding_dim)
  notes = ["VGGish has no classifier: the head is the identity, so logits equal the embedding"]
  batch_stats = {}
  if pca is not None:
    batch_stats = convert_pca(pca if isinstance(pca, Mapping) else read_pca(pca),
                              model.embedding_dim)
    notes.append("PCA post-processing attached: layers embedding_pca, embedding_quantized, "
                 "example_embeddings_pca, example_embeddings_quantized")
  return {"params": params, "batch_stats": batch_stats}, notes
