"""The Python API: a checkpoint as a function of waveforms.

  from audiotl_jax import api
  model = api.load("runs/animal_10pct")   # a workdir, checkpoints/ or step folder, an
                                          # `audiotl import` workdir, or an adapter folder
  out = model(waveforms, 16000)           # (batch, samples) float in [-1, 1) -> dict of numpy
  out["logits"], out["embedding"]         # (batch, classes), (batch, D)
  model(waveforms, 16000, layers=("block3", "block3:max"))   # + out["block3"], out["block3_max"]

What happens to the waveforms, in order (all but the last step on the host):
  1. checks: 2-D, non-empty, finite, float (int16 PCM only when the caller says `int16=True`)
  2. resampling to the checkpoint's rate with soxr (HQ), as `audiotl prepare` does
  3. float -> int16 PCM: round(x * 32768) clipped to [-32768, 32767], prepare's rule (samples
     beyond full scale saturate)
  4. windows of the checkpoint's clip length (metadata `clip_seconds`, the length `embed` uses):
     a shorter input is zero-padded at its end, as prepare pads clips; a longer one is cut into
     consecutive windows, the last ending where the input ends (overlapping its neighbour rather
     than padded with silence), and each output is the mean over the input's windows (a named
     layer is pooled within each window first). A model sees what it was trained on, whatever
     the family, and a clip-length input gives exactly `embed`'s numbers.
  5. featurizer + model, jitted over every device: rows padded to a multiple of the device count
     and sharded over train/mesh.py's `data` axis, compiled once per (outputs, rows, samples)
     and cached; rows come in power-of-two buckets up to `batch_size` windows, so a few
     compilations serve every batch size.
Layers are names of the model's output dict, optionally `name:pooling`, pooled as `embed` pools
them (train/inference.py's POOLING: maps and token sequences with `pooling`, vectors as they are).

`Model.frames` gives outputs over time, for the HEAR timestamp embeddings (`audiotl_jax.hear`).
The API runs in one process (its devices are the mesh); a multi-host job embeds a dataset with
`audiotl embed`.
"""
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from audiotl_jax import models
from audiotl_jax.errors import UserError
from audiotl_jax.features import featurizer
from audiotl_jax.train import mesh as mesh_lib
from audiotl_jax.train import adapters
from audiotl_jax.train.inference import (POOLING, Inference, load_adapted, load_for_inference,
                                         output_name, resolve_layers)

__all__ = ["Model", "load", "output_name"]  # output_name: the key a `name:pooling` spec gets

DEFAULT_LAYERS = ("logits", "embedding")
# Feature frames of the probes that find a layer's time axis: divisible by every stride of
# 2^a 3^b frames up to 2048, so the stride comes out exact.
_PROBE_FRAMES = 6144


def load(path, *, backbone=None, clip_seconds: float | None = None, batch_size: int = 64,
         num_devices: int = 0) -> "Model":
  """A checkpoint as a `Model`. `path`: a workdir, its checkpoints/ or a step folder (pre-trained,
  fine-tuned or `audiotl import`ed), or an adapter folder (`<finetune workdir>/adapter`, loaded on
  the backbone it records, or on `backbone`). `clip_seconds` overrides the metadata's window."""
  path = Path(path)
  if (path / adapters.ADAPTER_META).exists():
    model, variables, meta = load_adapted(path, backbone)
    fc = ml_collections.ConfigDict(meta["frontend"])
    inf = Inference(model, variables, meta, featurizer.make_featurizer(fc, meta.get("norm")), fc,
                    path.resolve())
  else:
    inf = load_for_inference(path)
  return Model(inf, clip_seconds=clip_seconds, batch_size=batch_size, num_devices=num_devices)


class Model:
  """A loaded checkpoint: `model(waveforms, sample_rate, layers=())` -> {name: numpy array}."""

  def __init__(self, inference: Inference, *, clip_seconds: float | None = None,
               batch_size: int = 64, num_devices: int = 0):
    self._model, variables, self.metadata, self._featurize, self._fc, self.source = inference
    self.name = self.metadata["model"]
    self.sample_rate = int(self._fc.sample_rate)
    self.clip_seconds = float(clip_seconds or self.metadata.get("clip_seconds") or 0)
    if self.clip_seconds <= 0:
      raise UserError(f"the checkpoint {self.source} records no clip_seconds; pass "
                      f"clip_seconds= to api.load")
    self.clip_samples = int(round(self.clip_seconds * self.sample_rate))
    if not isinstance(batch_size, int) or batch_size < 1:
      raise UserError(f"api.load: batch_size must be a positive integer, got {batch_size!r}")
    self.num_params = models.count_params(variables["params"])
    self.mesh = mesh_lib.make_mesh(num_devices)
    self.batch_size = max(batch_size, self.mesh.devices.size)
    replicated = mesh_lib.replicated(self.mesh)
    self._params = jax.device_put(variables["params"], replicated)
    self._stats = jax.device_put(variables.get("batch_stats", {}), replicated)
    self._compiled = {}  # (kind, outputs, rows, samples) -> compiled executable
    frames = featurizer.feature_frames(self._fc, self.clip_samples)
    self._order, self.layer_shapes = self._shapes(frames)
    self._time_layers = None  # found on first use: probing costs two traces

  def __repr__(self):
    return (f"api.Model({self.name}, {self.sample_rate} Hz, {self.clip_seconds:g} s windows, "
            f"{self.mesh.devices.size} device(s), from {self.source})")

  # ------------------------------------------------------------------ outputs per clip
  def __call__(self, waveforms, sample_rate, *, layers=(), pooling: str = "mean",
               int16: bool = False) -> dict:
    """(batch, samples) -> {"logits", "embedding", and each of `layers`: (batch, ...) float32}.

    `layers`: output names, each optionally `name:pooling` (key `name_pooling`); `pooling` is
    the default for maps and token sequences. Inputs longer than the clip are averaged over
    their windows (see the module docstring)."""
    audio = self._prepare(waveforms, sample_rate, int16)
    outputs = self.resolve(tuple(DEFAULT_LAYERS) + tuple(layers), pooling)
    windows, count = _windows(audio, self.clip_samples)
    out = self._run("clip", outputs, windows)
    return {k: v.reshape((len(audio), count) + v.shape[1:]).mean(1) for k, v in out.items()}

  def resolve(self, specs, pooling: str = "mean") -> dict:
    """{output name: (layer, pooling)} for layer specs, checked as `embed` checks them."""
    specs = tuple(dict.fromkeys(specs))  # a layer asked for twice is computed once
    return resolve_layers(specs, pooling, self.layer_shapes, self.name)

  # ------------------------------------------------------------------ outputs over time
  @property
  def time_layers(self) -> dict:
    """{layer: stride in feature frames} of the outputs with a time axis (conv maps, GRU
    sequences), in the model's order; empty when the frontend fixes the number of frames
    (AST's fbank) or the model takes only its own length."""
    if self._time_layers is None:
      self._time_layers = self._probe_time_layers()
    return self._time_layers

  def frame_layer(self, layer: str | None = None) -> tuple[str, int]:
    """(the layer `frames` reads, its features per row): `layer`, or by default the last time
    layer, or `embedding` when there is none."""
    name = layer or next(reversed(self.time_layers), "embedding")
    if name in self.time_layers:
      return name, int(self.layer_shapes[name].shape[-1])
    return name, self.output_sizes((name,))[0]

  def output_sizes(self, specs, pooling: str = "mean") -> list[int]:
    """Features per clip of each layer spec, after its pooling."""
    sizes = []
    for layer, how in self.resolve(specs, pooling).values():
      pooled = jax.eval_shape(POOLING[how][1], self.layer_shapes[layer])
      sizes.append(int(math.prod(pooled.shape[1:])))
    return sizes

  def frames(self, waveforms, sample_rate, *, layer: str | None = None,
             hop_seconds: float | None = None, int16: bool = False):
    """Outputs over time -> (values (batch, T, D) float32, centres (T,) in seconds).

    A layer with a time axis (default: the last one, e.g. `block4` of the CNNs, `gru` of the
    CRNN) runs over the whole input in one pass (zero-padded to a whole number of clips), maps
    averaged over frequency; row i covers feature frames [i*s, (i+1)*s) for the layer's
    stride s and is centred on their middle. Any other layer spec (and the default when there
    is no time axis, `embedding`) is read from clip-length windows centred every
    `hop_seconds` (default a quarter clip) from 0 to the end. Rows centred after the end of
    the input are dropped."""
    audio = self._prepare(waveforms, sample_rate, int16)
    n = audio.shape[1]
    name = layer or next(reversed(self.time_layers), "embedding")
    if name in self.time_layers:
      stride = self.time_layers[name]
      padded = max(1, math.ceil(n / self.clip_samples)) * self.clip_samples
      values = self._run("map", name, np.pad(audio, ((0, 0), (0, padded - n))))["map"]
      hop = self._feature_hop()
      centres = (np.arange(values.shape[1]) * stride + (stride - 1) / 2) * hop / self.sample_rate
      keep = max(1, int(np.count_nonzero(centres <= n / self.sample_rate)))
      return values[:, :keep], centres[:keep]
    hop_seconds = hop_seconds or self.clip_seconds / 4
    if hop_seconds <= 0:
      raise UserError(f"hop_seconds must be positive, got {hop_seconds!r}")
    outputs = self.resolve((name,))
    step = max(1, int(round(hop_seconds * self.sample_rate)))
    count = n // step + 1
    half = self.clip_samples // 2
    padded = np.pad(audio, ((0, 0), (half, self.clip_samples - half)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, self.clip_samples, axis=1)
    windows = windows[:, :count * step:step].reshape(-1, self.clip_samples)
    (values,) = self._run("clip", outputs, np.ascontiguousarray(windows)).values()
    return (values.reshape((len(audio), count) + values.shape[1:]),
            np.arange(count) * step / self.sample_rate)

  # ------------------------------------------------------------------ internals
  def _prepare(self, waveforms, sample_rate, int16: bool) -> np.ndarray:
    """Checks -> resampling -> int16 PCM, as prepare makes records."""
    x = _check(waveforms, sample_rate, int16)
    rate = int(sample_rate)
    if int16 and rate == self.sample_rate:
      return x
    x = x.astype(np.float32) / 32768.0 if int16 else x.astype(np.float32)
    if rate != self.sample_rate:
      import soxr  # only resampling needs it
      n = x.shape[1]
      x = soxr.resample(x.T, rate, self.sample_rate, quality="HQ").T
      if x.shape[1] == 0:
        raise UserError(f"waveforms of {n} samples at {rate} Hz are empty at "
                        f"the model's {self.sample_rate} Hz")
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)

  def _shapes(self, frames: int):
    """(output names in the model's order, {name: ShapeDtypeStruct}) for one clip."""
    order = []

    def apply(x):
      _, out = self._model.apply({"params": self._params, "batch_stats": self._stats}, x,
                                 train=False)
      order[:] = list(out)  # traced once: the dict's own order, which eval_shape would sort
      return out

    shapes = jax.eval_shape(apply, jax.ShapeDtypeStruct((1, frames, self._fc.n_mels),
                                                        jnp.float32))
    return order, shapes

  def _probe_time_layers(self) -> dict:
    n = self.clip_samples
    if featurizer.feature_frames(self._fc, n) == featurizer.feature_frames(self._fc, 2 * n):
      return {}
    try:
      _, short = self._shapes(_PROBE_FRAMES)
      _, long = self._shapes(2 * _PROBE_FRAMES)
    except Exception:  # pylint: disable=broad-except  (a model of one fixed input length)
      return {}
    found = {}
    for name in self._order:  # float only: VGGish's 8-bit quantised embeddings are no features
      a, b = short[name].shape, long[name].shape
      if (len(a) in (3, 4) and b[1] == 2 * a[1] and a[2:] == b[2:] and _PROBE_FRAMES % a[1] == 0
          and jnp.issubdtype(short[name].dtype, jnp.floating)):
        found[name] = _PROBE_FRAMES // a[1]
    return found

  def _feature_hop(self) -> float:
    """Samples per feature frame: the frontend's hop, else its frame count's slope."""
    if self._fc.get("hop_length"):
      return float(self._fc.hop_length)
    n = 100 * self.sample_rate
    return n / (featurizer.feature_frames(self._fc, 2 * n) - featurizer.feature_frames(self._fc, n))

  def _rows(self, count: int, samples: int) -> int:
    """Rows per call: a power of two up to `batch_size` clips' worth of samples, a multiple of
    the device count."""
    devices = self.mesh.devices.size
    limit = max(1, self.batch_size * self.clip_samples // samples)
    rows = min(1 << max(0, count - 1).bit_length(), limit)
    return -(-rows // devices) * devices

  def _executable(self, kind: str, outputs, rows: int, samples: int):
    key = (kind, tuple(outputs.items()) if isinstance(outputs, dict) else outputs, rows, samples)
    if key not in self._compiled:
      model, featurize = self._model, self._featurize

      def forward(params, batch_stats, audio):
        _, out = model.apply({"params": params, "batch_stats": batch_stats}, featurize(audio),
                             train=False)
        if kind == "map":
          x = out[outputs]
          return {"map": x.mean(2) if x.ndim == 4 else x}
        return {name: POOLING[how][1](out[layer]) for name, (layer, how) in outputs.items()}

      audio = jax.ShapeDtypeStruct((rows, samples), jnp.int16,
                                   sharding=mesh_lib.batch_sharding(self.mesh))
      self._compiled[key] = jax.jit(forward).lower(self._params, self._stats, audio).compile()
    return self._compiled[key]

  def _run(self, kind: str, outputs, audio: np.ndarray) -> dict:
    """int16 (N, samples) -> {name: float32 (N, ...)}, in device-sized chunks of rows."""
    count, samples = audio.shape
    rows = self._rows(count, samples)
    fn = self._executable(kind, outputs, rows, samples)
    sharding = mesh_lib.batch_sharding(self.mesh)
    pending = []
    for start in range(0, count, rows):  # dispatch every chunk, then fetch: the device never waits
      chunk = audio[start:start + rows]
      chunk = np.pad(chunk, ((0, rows - len(chunk)), (0, 0)))
      pending.append(fn(self._params, self._stats, jax.device_put(chunk, sharding)))
    return {k: np.concatenate([np.asarray(p[k], np.float32) for p in pending])[:count]
            for k in pending[0]}


def _check(waveforms, sample_rate, int16: bool) -> np.ndarray:
  """The caller's array as numpy, or a one-line UserError saying what is wrong with it."""
  if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float, np.number)) \
      or sample_rate <= 0 or sample_rate != int(sample_rate):
    raise UserError(f"sample_rate must be a positive whole number of Hz, got {sample_rate!r}")
  try:
    x = np.asarray(waveforms)
  except Exception as e:  # pylint: disable=broad-except  (whatever the caller passed)
    raise UserError(f"waveforms must be an array (batch, samples), got {type(waveforms).__name__}"
                    f": {e}") from None
  if x.ndim != 2:
    hint = "; pass x[None] for one clip" if x.ndim == 1 else ""
    raise UserError(f"waveforms must be 2-D (batch, samples), got shape {x.shape}{hint}")
  if x.size == 0:
    raise UserError(f"waveforms are empty: shape {x.shape}")
  if int16:
    if x.dtype != np.int16:
      raise UserError(f"int16=True but the waveforms have dtype {x.dtype}")
    return x
  if np.issubdtype(x.dtype, np.integer):
    raise UserError(f"waveforms have integer dtype {x.dtype}: pass float in [-1, 1), or int16 "
                    f"PCM with int16=True")
  if not np.issubdtype(x.dtype, np.floating):
    raise UserError(f"waveforms must be float in [-1, 1), got dtype {x.dtype}")
  bad = ~np.isfinite(x)
  if bad.any():
    rows = np.flatnonzero(bad.any(axis=1))
    raise UserError(f"waveforms hold {int(bad.sum())} non-finite samples (NaN/Inf), in rows "
                    f"{', '.join(map(str, rows[:5]))}{' ...' if len(rows) > 5 else ''}")
  return x


def _windows(audio: np.ndarray, size: int) -> tuple[np.ndarray, int]:
  """(B, n) -> ((B * K, size), K): one zero-padded window, or K consecutive ones with the last
  ending at the input's end."""
  n = audio.shape[1]
  if n <= size:
    return np.pad(audio, ((0, 0), (0, size - n))), 1
  count = math.ceil(n / size)
  starts = [k * size for k in range(count - 1)] + [n - size]
  return np.stack([audio[:, s:s + size] for s in starts], axis=1).reshape(-1, size), count
