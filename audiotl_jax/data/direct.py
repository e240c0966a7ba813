"""Reads a prepared shard's clips from a memory map of the file: each clip's audio is copied
once, from the page cache into its row of the batch (through ArrayRecord: four copies first).

`audiotl prepare` writes each record as its own uncompressed Riegeli chunk (`shard_writer`), so
its bytes lie in the file as written, cut only by the 24-byte header at every 64 KiB of a
Riegeli file. Offsets here are "usable": the file less its block headers, where a chunk is one
run, which `_pieces` maps back to file ranges. The ArrayRecord footer says where each record's
chunk starts (read once a process needs the shard); each read checks the chunk header and the
record's msgpack layout.

What this does not understand goes through ArrayRecord as before: per shard (compressed,
grouped, on object storage, or AUDIOTL_DIRECT_READ=0), per record (another msgpack layout, a
chunk at odds with the footer). A damaged shard ends in a one-line UserError naming it. Not
checked: the chunk's data hash (ArrayRecord's HighwayHash), so a flipped bit inside a clip's
audio is read as it is, as from a wav file.
"""
import bisect
import itertools
import mmap
import os
import struct
import threading

import numpy as np

from audiotl_jax import fileio
from audiotl_jax.data import dataset, records

BLOCK, BLOCK_HEADER, CHUNK_HEADER = 1 << 16, 24, 40
USABLE = BLOCK - BLOCK_HEADER
SIMPLE = ord("r")  # a chunk of records, stored as their sizes then their values
MAGIC = 0x71930e704fdae05e  # ArrayRecord's postscript
HEAD = 1024  # bytes read to find a record's audio: a record whose id is longer reads as before


class _Unknown(Exception):
  """The file is not a shard this module reads: ArrayRecord decides whether it is damaged."""


def enabled() -> bool:
  """Off with AUDIOTL_DIRECT_READ=0, to compare against, or to have ArrayRecord check hashes."""
  return os.environ.get("AUDIOTL_DIRECT_READ", "1") != "0"


def _usable(pos: int) -> int:
  # A chunk may start at a block boundary: its first byte follows that block's header.
  block, offset = divmod(pos, BLOCK)
  return block * USABLE + max(offset - BLOCK_HEADER, 0)


def _pieces(u: int, n: int):
  """(file position, length) of the runs that hold usable bytes [u, u + n)."""
  while n > 0:
    block, offset = divmod(u, USABLE)
    take = min(n, USABLE - offset)
    yield block * BLOCK + BLOCK_HEADER + offset, take
    u, n = u + take, n - take


def _varint(buf, pos: int) -> tuple[int, int]:
  value = shift = 0
  while True:
    byte = buf[pos]
    value, pos, shift = value | (byte & 0x7f) << shift, pos + 1, shift + 7
    if byte < 0x80:
      return value, pos


def _fields(buf) -> dict:
  """A protobuf message's varint and length-delimited fields (the last of each number)."""
  out, pos = {}, 0
  while pos < len(buf):
    key, pos = _varint(buf, pos)
    if key & 7 not in (0, 2):
      raise _Unknown(f"protobuf wire type {key & 7}")
    value, pos = _varint(buf, pos)  # the value, or the length of the bytes that follow
    if key & 7 == 2:
      value, pos = buf[pos:pos + value], pos + value
    out[key >> 3] = value
  return out


def _simple(buf) -> tuple[list, int]:
  """The record sizes of the uncompressed simple chunk whose header starts `buf`, and where (in
  `buf`) its values start."""
  _, data_size, _, kind, decoded = struct.unpack_from("<5Q", buf)
  if kind & 0xff != SIMPLE or buf[CHUNK_HEADER] != 0:  # 0: uncompressed
    raise _Unknown(f"chunk type {kind & 0xff}, compression {buf[CHUNK_HEADER]}")
  sizes_size, start = _varint(buf, CHUNK_HEADER + 1)
  sizes, at = [], start
  while at < start + sizes_size:
    size, at = _varint(buf, at)
    sizes.append(size)
  if len(sizes) != kind >> 8 or sum(sizes) != decoded or at + decoded != CHUNK_HEADER + data_size:
    raise _Unknown("chunk header and record sizes disagree")
  return sizes, at


class _Mapped:
  """One shard mapped read-only, with the usable offset and size of each record's chunk."""

  def __init__(self, path: str, expected: int):
    with open(path, "rb") as f:
      try:  # an empty file, or garbage in the footer, fails in one of these ways
        self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.path, self.size, self.bytes = path, len(self.map), np.frombuffer(self.map, np.uint8)
        self.chunks, self.sizes = self._index(expected)
      except (IndexError, TypeError, ValueError, OverflowError, struct.error) as e:
        raise _Unknown(repr(e)) from None

  def read(self, u: int, n: int) -> bytes:
    """Usable bytes [u, u + n), cut short at the end of the file."""
    block, offset = divmod(u, USABLE)
    if offset + n <= USABLE:  # most reads: within one block
      pos = block * BLOCK + BLOCK_HEADER + offset
      return self.map[pos:pos + n]
    return b"".join(self.map[p:p + k] for p, k in _pieces(u, n))

  def _chunk(self, pos: int) -> tuple[list, bytes]:
    """The record sizes and values of the simple chunk at file position `pos`."""
    u = _usable(pos)
    sizes_size, _ = _varint(self.read(u + CHUNK_HEADER + 1, 10), 0)  # footer: one per chunk
    sizes, at = _simple(self.read(u, CHUNK_HEADER + 11 + sizes_size))
    return sizes, self.read(u + at, min(sum(sizes), self.size))

  def _index(self, expected: int) -> tuple[np.ndarray, np.ndarray]:
    # The postscript is the chunk in the file's last block; it locates the footer, whose first
    # record describes the file and whose others give each chunk's position and size.
    if self.size < 2 * BLOCK or self.size % BLOCK:  # footer and postscript end on a block
      raise _Unknown(f"{self.size} bytes: not a whole number of blocks")
    sizes, values = self._chunk(self.size - BLOCK)
    post = _fields(values[:sizes[0]])
    if post.get(2) != MAGIC or not 0 < post.get(1, 0) < self.size - BLOCK:
      raise _Unknown("no ArrayRecord postscript")
    sizes, values = self._chunk(post[1])
    meta = _fields(_fields(values[:sizes[0]]).get(1, b""))
    entries = [_fields(values[a:b]) for a, b in itertools.pairwise(
        itertools.accumulate(sizes, initial=0))][1:]
    # One chunk per record: fewer chunks would be a group_size > 1, where a read costs a group.
    if meta.get(3) != expected or len(entries) != expected:
      raise _Unknown(f"footer lists {len(entries)} chunks, {expected} records expected")
    chunks = np.asarray([_usable(e.get(1, 0)) for e in entries], np.int64)
    sizes = np.asarray([e.get(2, 0) for e in entries], np.int64)
    # So that no read of a record goes past the file's records, whatever its chunk header says.
    if chunks.size and (chunks.min() <= 0 or (chunks + CHUNK_HEADER + sizes).max()
                        > _usable(post[1])):
      raise _Unknown("chunk offsets outside the file's records")
    return chunks, sizes

  def clip(self, i: int):
    """Record i as a `Clip`, or None when its chunk or layout is not the expected one."""
    if self.map.size() < self.size:
      # Reading the mapping past the end of a shrunken file would kill the process (SIGBUS).
      raise dataset.shard_error(self.path, f"truncated while being read ({self.map.size()} "
                                f"bytes, {self.size} when opened; at record {i})")
    u, size = int(self.chunks[i]), int(self.sizes[i])
    buf = self.read(u, CHUNK_HEADER + 12 + min(size, HEAD))
    try:
      sizes, at = _simple(buf)
    except (_Unknown, IndexError, struct.error):
      return None
    got = records.fast_head(buf[at:at + size])
    if sizes != [size] or got is None or got[1] + got[2] + 7 > size:  # 7: b"\xa6labels"
      return None
    clip_id, offset, n = got
    labels = records.fast_labels(self.read(u + at + offset + n, size - offset - n))
    return None if labels is None else Clip(self.bytes, u + at + offset, n // 2, clip_id, labels)


class Clip:
  """A record for a batch row: `id`, `labels`, `num_samples`; `copy_into` reads its audio from
  usable offset `u` of a shard's map, or from offset `u` of a record ArrayRecord read (`mapped`)."""

  def __init__(self, src, u: int, num_samples: int, clip_id: str, labels, mapped=True):
    self.src, self.u, self.mapped = src, u, mapped
    self.num_samples, self.id, self.labels = num_samples, clip_id, labels

  def copy_into(self, row: np.ndarray, start: int) -> None:
    """row = samples [start, start + len(row)), zero-padded past the clip's end: one copy, in
    pieces around the block headers (bytes: a block header may cut a sample in two)."""
    n = max(0, min(self.num_samples - start, len(row)))
    u, dst, at = self.u + 2 * start, row.view(np.uint8), 0
    for pos, k in _pieces(u, 2 * n) if self.mapped else [(u, 2 * n)]:
      dst[at:at + k] = self.src[pos:pos + k]
      at += k
    row[n:] = 0


class DirectSource:
  """The records of a split's shards: `[i]` and `len` are the ArrayRecord source's, `clip(i)`
  reads record i for a batch row. Picklable for Grain's workers: each process maps the shards
  it reads itself, when it first needs them."""

  def __init__(self, source, paths, counts, enabled: bool = True):
    self.source, self.paths, self.counts = source, [str(p) for p in paths], list(counts)
    self.ends, self.enabled = list(itertools.accumulate(self.counts)), enabled
    self._mapped, self._lock = {}, threading.Lock()

  def __getstate__(self) -> dict:
    return {k: v for k, v in self.__dict__.items() if k not in ("_mapped", "_lock")}

  def __setstate__(self, state: dict) -> None:
    self.__dict__.update(state)
    self._mapped, self._lock = {}, threading.Lock()

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index) -> bytes:
    return self.source[index]

  def _shard(self, k: int) -> _Mapped | None:
    """Shard k mapped (on its first read in this process), or None: read through ArrayRecord."""
    with self._lock:  # Grain's threads share this source
      if k not in self._mapped:
        local = self.enabled and fileio.is_local(self.paths[k])
        self._mapped[k] = _open(self.paths[k], self.counts[k]) if local else None
      return self._mapped[k]

  def mapped(self) -> bool:
    """Whether every shard is read from a memory map (opening them all in this process)."""
    return all(self._shard(k) is not None for k in range(len(self.paths)))

  def clip(self, index: int):
    """Record `index`: `.id`, `.labels`, `.num_samples`, `.copy_into(row, start)`."""
    k = bisect.bisect_right(self.ends, index)
    local = index - (self.ends[k - 1] if k else 0)
    shard = self._shard(k)
    if shard is not None and (found := shard.clip(local)) is not None:
      return found
    try:
      rec = records.decode(self.source[index])
      return Clip(rec["audio"].view(np.uint8), 0, len(rec["audio"]), rec["id"], rec["labels"],
                  mapped=False)
    except Exception as e:  # pylint: disable=broad-except  (any reader error means damage)
      why = str(e).splitlines()[0] if str(e) else type(e).__name__
      raise dataset.shard_error(self.paths[k], f"unreadable at record {local} ({why})") from None


def _open(path: str, expected: int) -> _Mapped | None:
  try:
    return _Mapped(path, expected)
  except FileNotFoundError:
    raise dataset.shard_error(path, "missing") from None
  except (_Unknown, OSError):
    damage = dataset.shard_damage(path, expected)
    if damage is not None:
      raise dataset.shard_error(path, damage) from None
    return None  # a shard ArrayRecord reads and this does not (compressed, grouped)
