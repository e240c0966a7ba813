"""Audio file -> mono int16 clip: decode (libsndfile, audioread fallback), downmix, resample.

Every way a file can fail is a `Skip` with the reason; damage that still leaves usable audio
(a truncated WAV, clipping) is read and said in a note.
"""
import os
import re
import warnings

import numpy as np
import soundfile as sf
import soxr

# Read this much past `clip_seconds` so the resampler's filter has real signal at the clip's end.
_READ_MARGIN_SECONDS = 0.1
# libsndfile's log for a WAV/AIFF whose data chunk is shorter than its header says.
_HEADER_MISMATCH = re.compile(r"data\s*:\s*(\d+)\s*\(should be (\d+)\)")


class Skip(Exception):
  """A file that cannot become a record; the message is the reason."""


# Item paths `tfds:{name}:{version}:{split}:{index}:{data_dir}` (readers/tfds.py); data_dir last,
# as it may hold ':' itself.
TFDS_PREFIX = "tfds:"
_tfds_sources = {}  # (name:version, split, data_dir) -> (data source, sample rate), per process


def _tfds_example(path: str) -> tuple[np.ndarray, int]:
  """One example of an already prepared TFDS dataset, read through its TFDS data source."""
  # Imported here: both are needed only for TFDS items (tensorflow_datasets is an optional extra).
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from audiotl_jax.data.readers import tfds as reader  # pylint: disable=g-import-not-at-top
  name, version, split, index, data_dir = path[len(TFDS_PREFIX):].split(":", 4)
  key = (f"{name}:{version}", split, data_dir)
  if key not in _tfds_sources:
    builder = reader.prepared_builder(tfds, key[0], data_dir)
    _tfds_sources[key] = (reader.random_access(builder, split, data_dir),
                          int(builder.info.features["audio"].sample_rate))
  source, sr = _tfds_sources[key]
  audio = np.asarray(source[int(index)]["audio"])
  if np.issubdtype(audio.dtype, np.integer):
    audio = audio.astype(np.float32) / 32768.0  # 16-bit PCM values (int16, or TFDS's int64)
  return audio.astype(np.float32).reshape(len(audio), -1), sr


def _decode(path: str, max_seconds: float | None,
            start: float = 0.0) -> tuple[np.ndarray, int, str | None]:
  """(frames, channels) float32 from `start` seconds on, the file's sample rate, and a note when
  the header and the file disagree (a cut-off download; libsndfile reads what is there)."""
  if path.startswith(TFDS_PREFIX):
    x, sr = _tfds_example(path)
    x = x[int(round(start * sr)):]
    return (x if max_seconds is None else x[:int(np.ceil(max_seconds * sr))]), sr, None
  if os.path.isdir(path):
    raise Skip("a directory, not an audio file")
  try:
    with sf.SoundFile(path) as f:
      if start:
        f.seek(min(int(round(start * f.samplerate)), f.frames))
      frames = -1 if max_seconds is None else int(np.ceil(max_seconds * f.samplerate))
      short = _HEADER_MISMATCH.search(f.extra_info)
      note = (f"truncated: the header promises {short[1]} bytes of audio, {short[2]} present"
              if short else None)
      return f.read(frames, dtype="float32", always_2d=True), f.samplerate, note
  except sf.LibsndfileError as e:
    if not os.path.isfile(path):
      raise Skip("missing file") from e
    if os.path.getsize(path) == 0:
      raise Skip("empty (0-byte file)") from e
    first_error = e
  # Formats libsndfile lacks (e.g. m4a) go through librosa's audioread backend. Imported here:
  # librosa is slow to import and rarely needed.
  import librosa  # pylint: disable=g-import-not-at-top
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # librosa warns that soundfile failed; we know
      x, sr = librosa.load(path, sr=None, mono=False, offset=start, duration=max_seconds,
                           dtype=np.float32)
  except Exception as e:  # pylint: disable=broad-except  (any decoder failure means unreadable)
    raise Skip(f"unreadable: {first_error}; audioread: {type(e).__name__}: {e}") from e
  return np.atleast_2d(x).T, int(sr), None


def load_clip(path, sample_rate: int, clip_seconds: float | None, *, start: float = 0.0,
              duration: float | None = None, notes: list | None = None,
              info: dict | None = None) -> np.ndarray:
  """Decode, downmix (mean), resample (soxr HQ), pad/crop from the start, convert to int16.

  `start`/`duration` (seconds) read a span of the file. Clipping (samples beyond full scale) is
  kept, saturated, and said in `notes`. `info` gets the file's own `sample_rate`, so prepare can
  say what it resampled.
  """
  spans = [s for s in (clip_seconds, duration) if s is not None]
  max_seconds = min(spans) + _READ_MARGIN_SECONDS if spans else None
  x, sr, note = _decode(str(path), max_seconds, start)
  if note and notes is not None:
    notes.append(note)
  if info is not None:
    info["sample_rate"] = int(sr)
  if duration is not None:
    x = x[:int(round(duration * sr))]
  if x.size == 0:
    raise Skip("empty (0 samples)")
  if not np.isfinite(x).all():
    raise Skip("non-finite samples (NaN/Inf)")
  over = int(np.count_nonzero(np.abs(x) > 1.0))
  if over and notes is not None:
    notes.append(f"clipped: {over} samples beyond full scale, saturated")
  x = x.mean(axis=1)
  if sr != sample_rate:
    x = soxr.resample(x, sr, sample_rate, quality="HQ")
  if clip_seconds is not None:
    n = int(round(clip_seconds * sample_rate))
    x = np.pad(x[:n], (0, max(0, n - len(x))))
  return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)
