"""The HEAR 2021 API (hearbenchmark.com, "common API") over `audiotl_jax.api`, for any checkpoint.

  python -m heareval.embeddings.runner audiotl_jax.hear --model runs/animal_10pct \\
      --tasks-dir tasks [--model-options '{"hop_ms": 25, "scene_layer": "block4:panns"}']

`load_model(path, **options)` takes what `api.load` takes (a workdir, checkpoint folder,
`audiotl import` workdir or adapter folder); hear-eval-kit's `--model-options` become the options.

Scene embeddings: the API's `embedding` (or `scene_layer`, any `name:pooling`): one clip-length
window, or the mean over consecutive windows for longer audio, as `api.Model.__call__` does.

Timestamp embeddings: rows of `api.Model.frames`, the model's own time axis: by default its last
output with one (`api.Model.time_layers`), averaged over frequency, from one pass over the whole
sound. Native hops at the usual 10 ms feature hop: cnn, dcase_cnn and PANNs' Cnn6/10 `block4`
(and crnn's `gru`) 160 ms, Cnn14 `block6` 320 ms, VGGish `example_embeddings` 960 ms (its 0.96 s
examples). A model without a time axis (AST: its fbank has a fixed length) gives the
`embedding` of clip-length windows centred every quarter clip (`window_hop_ms`). The rows are
then linearly interpolated onto a fixed grid: timestamps 0, hop_ms, 2 hop_ms, ... up to the
sound's end, in milliseconds (`hop_ms` 50 by default, HEAR's suggested upper bound), so a sound
gets floor(duration / hop_ms) + 1 timestamps, and a longer sound's timestamps extend a shorter
one's. `hop_ms=0` returns the native rows at their centres instead; `timestamp_layer` picks
another layer (e.g. `block2`: 40 ms native hop, or `embedding` for windows).

Audio may be numpy, jax or torch (when torch is installed; it is never required). For torch input
the results are torch tensors (hear-eval-kit calls `.detach().cpu().numpy()` on them), numpy
otherwise. hear-eval-kit accepts only torch or TensorFlow modules, so with torch installed the
model object is a `torch.nn.Module` (without parameters: the weights stay in JAX).
"""
import sys

import numpy as np

from audiotl_jax import api
from audiotl_jax.errors import UserError

HOP_MS = 50.0


def _module_base():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return object
  return torch.nn.Module


class HearModel(_module_base()):
  """What `load_model` returns: the HEAR attributes around an `api.Model`."""

  def __init__(self, model: api.Model, *, hop_ms: float, scene_layer: str,
               timestamp_layer: str | None, window_hop_ms: float | None):
    super().__init__()
    if hop_ms < 0 or (window_hop_ms is not None and window_hop_ms <= 0):
      raise UserError(f"hop_ms must be >= 0 and window_hop_ms > 0, got {hop_ms}, {window_hop_ms}")
    self.model, self.hop_ms, self.window_hop_ms = model, float(hop_ms), window_hop_ms
    self.sample_rate = model.sample_rate
    self.scene_layer = scene_layer
    (self.scene_embedding_size,) = model.output_sizes((scene_layer,))
    self.timestamp_layer, self.timestamp_embedding_size = model.frame_layer(timestamp_layer)

  def __repr__(self):
    return (f"hear.HearModel({self.model!r}, scene {self.scene_layer} "
            f"({self.scene_embedding_size}), timestamps {self.timestamp_layer} "
            f"({self.timestamp_embedding_size}) every {self.hop_ms:g} ms)")


def load_model(model_file_path: str = "", *, hop_ms: float = HOP_MS,
               scene_layer: str = "embedding", timestamp_layer: str | None = None,
               window_hop_ms: float | None = None, batch_size: int = 64, backbone=None,
               clip_seconds: float | None = None) -> HearModel:
  """A checkpoint as a HEAR model (see the module docstring for the options)."""
  if not model_file_path:
    raise UserError("hear.load_model needs model_file_path: a workdir, checkpoint folder, "
                    "`audiotl import` workdir or adapter folder (hear-eval-kit: --model PATH)")
  model = api.load(model_file_path, backbone=backbone, clip_seconds=clip_seconds,
                   batch_size=batch_size)
  return HearModel(model, hop_ms=hop_ms, scene_layer=scene_layer,
                   timestamp_layer=timestamp_layer, window_hop_ms=window_hop_ms)


def get_scene_embeddings(audio, model: HearModel):
  """(n_sounds, n_samples) at `model.sample_rate` -> (n_sounds, scene_embedding_size) float32."""
  x, torch_like = _as_numpy(audio)
  emb = model.model(x, model.sample_rate, layers=(model.scene_layer,))[
      api.output_name(model.scene_layer)]
  return _like(np.ascontiguousarray(emb, np.float32), torch_like)


def get_timestamp_embeddings(audio, model: HearModel):
  """(n_sounds, n_samples) -> (embeddings (n_sounds, T, timestamp_embedding_size) float32,
  timestamps (n_sounds, T) float32 in ms, the same row for every sound)."""
  x, torch_like = _as_numpy(audio)
  hop = model.window_hop_ms / 1000 if model.window_hop_ms else None
  values, centres = model.model.frames(x, model.sample_rate, layer=model.timestamp_layer,
                                       hop_seconds=hop)
  centres_ms = centres * 1000.0
  if model.hop_ms:
    duration_ms = x.shape[1] / model.sample_rate * 1000.0
    times = np.arange(int(np.floor(duration_ms / model.hop_ms + 1e-6)) + 1) * model.hop_ms
    values = interpolate(values, centres_ms, times)
  else:
    times = centres_ms
  stamps = np.broadcast_to(times.astype(np.float32), (len(x), len(times)))
  return (_like(np.ascontiguousarray(values, np.float32), torch_like),
          _like(np.ascontiguousarray(stamps), torch_like))


def interpolate(values: np.ndarray, centres: np.ndarray, times: np.ndarray) -> np.ndarray:
  """(B, T, D) rows at increasing `centres` -> (B, len(times), D), linear in between, the edge
  rows held before the first centre and after the last."""
  last = len(centres) - 1
  lo = np.clip(np.searchsorted(centres, times, side="right") - 1, 0, last)
  hi = np.minimum(lo + 1, last)
  span = centres[hi] - centres[lo]
  w = np.clip(np.divide(times - centres[lo], span, out=np.zeros_like(times, dtype=float),
                        where=span > 0), 0.0, 1.0)[None, :, None]
  return values[:, lo] * (1.0 - w) + values[:, hi] * w


def _as_numpy(audio):
  """(numpy array, the torch module when `audio` is a torch tensor): numpy, jax, torch in."""
  torch = sys.modules.get("torch")  # a torch tensor means torch is imported already
  if torch is not None and isinstance(audio, torch.Tensor):
    return audio.detach().cpu().numpy(), torch
  return np.asarray(audio), None


def _like(array: np.ndarray, torch):
  return torch.from_numpy(array) if torch is not None else array
