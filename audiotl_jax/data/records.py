"""The on-disk record: one clip per ArrayRecord entry, msgpack-encoded.

A record holds the clip id, its audio as int16 PCM at the manifest's sample rate (mono), and its
label indices into the manifest's class list. int16 keeps shards small (a 10 s 16 kHz clip is
320 KB) and is converted to float on the accelerator, inside the jitted step.
"""
from typing import Sequence

import msgpack
import numpy as np


def encode(*, id: str, audio: np.ndarray, labels: Sequence[int]) -> bytes:
  audio = np.ascontiguousarray(audio, dtype=np.int16)
  if audio.ndim != 1:
    raise ValueError(f"record {id!r}: audio must be mono (1-D), got shape {audio.shape}")
  return msgpack.packb({
      "id": str(id),
      "audio": audio.tobytes(),
      "labels": [int(x) for x in labels],
  })


def decode(raw: bytes) -> dict:
  d = msgpack.unpackb(raw)
  return {
      "id": d["id"],
      "audio": np.frombuffer(d["audio"], dtype=np.int16),
      "labels": np.asarray(d["labels"], dtype=np.int32),
  }
