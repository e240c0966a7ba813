"""The on-disk record: one clip per ArrayRecord entry, msgpack-encoded.

A record holds the clip id, its audio as int16 PCM at the manifest's sample rate (mono), and its
label indices into the manifest's class list. int16 keeps shards small (a 10 s 16 kHz clip is
320 KB) and is converted to float on the accelerator, inside the jitted step.

`decode` reads the layout `encode` writes (a 3-entry map: id, audio, labels, in that order)
directly: the audio is an int16 view of the record's own bytes, so the only copy of a clip on its
way to a batch is into the batch. Any other msgpack layout goes through `msgpack.unpackb`.
"""
import struct
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


# msgpack length prefixes: (fixed-size tag, big-endian length format) for str and bin.
_STR = {0xd9: ">B", 0xda: ">H", 0xdb: ">I"}
_BIN = {0xc4: ">B", 0xc5: ">H", 0xc6: ">I"}


def _length(raw: bytes, pos: int, tags: dict, fix: bool) -> tuple[int, int] | None:
  """(start of the payload, its length) of the str/bin whose header is at `pos`, else None."""
  tag = raw[pos]
  if fix and 0xa0 <= tag <= 0xbf:
    return pos + 1, tag & 0x1f
  fmt = tags.get(tag)
  if fmt is None:
    return None
  return pos + 1 + struct.calcsize(fmt), struct.unpack_from(fmt, raw, pos + 1)[0]


def fast_head(head) -> tuple[str, int, int] | None:
  """(id, offset of the audio bytes, their length) of a record in `encode`'s layout, read from
  its first bytes: `head` may be a prefix of the record (`direct` reads no more than that). None
  for any other layout, or when the prefix ends before the audio does start."""
  try:
    if head[:4] != b"\x83\xa2id":
      return None
    got = _length(head, 4, _STR, fix=True)
    if got is None:
      return None
    pos, n = got
    clip_id = bytes(head[pos:pos + n]).decode()
    pos += n
    if head[pos:pos + 6] != b"\xa5audio":
      return None
    got = _length(head, pos + 6, _BIN, fix=False)
  except (IndexError, struct.error, UnicodeDecodeError):
    return None
  if got is None or got[1] % 2:
    return None
  return clip_id, got[0], got[1]


def fast_labels(tail) -> np.ndarray | None:
  """The labels of a record in `encode`'s layout, from the bytes after its audio; None if they
  are not where that layout puts them."""
  if tail[:7] != b"\xa6labels":
    return None
  try:
    return np.asarray(msgpack.unpackb(memoryview(tail)[7:]), dtype=np.int32)
  except ValueError:
    return None


def _decode_fast(raw: bytes) -> dict | None:
  got = fast_head(raw)
  if got is None:
    return None
  clip_id, pos, n = got
  labels = fast_labels(memoryview(raw)[pos + n:])
  if labels is None:
    return None
  return {"id": clip_id, "audio": np.frombuffer(raw, np.int16, n // 2, pos), "labels": labels}


def decode(raw: bytes) -> dict:
  """{"id", "audio": read-only int16 (samples,), "labels": int32}: a view of `raw`, no copy."""
  fast = _decode_fast(raw)
  if fast is not None:
    return fast
  d = msgpack.unpackb(raw)
  return {
      "id": d["id"],
      "audio": np.frombuffer(d["audio"], dtype=np.int16),
      "labels": np.asarray(d["labels"], dtype=np.int32),
  }
