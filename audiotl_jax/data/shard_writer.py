"""Prepare: a `DatasetListing` -> ArrayRecord shards of int16 mono clips + `manifest.json`.

Layout of a prepared directory:
  <split>-<k:05d>.array_record  records (see `records.py`), items of the split in listing order
  <split>-<k:05d>.json          sidecar: ids, label indices, samples, source rates and skips
  <split>.labels.npz            ids, offsets (n+1), values: labels of every record of the split
  skipped.jsonl                 files that could not be decoded, one per line, with the reason
  problems.jsonl                the listing's problems (rows dropped or kept; see readers/common)
  notes.jsonl                   files kept despite damage (truncated, clipped)
  manifest.json                 written last; see `prepare`

The work unit is a shard. A shard is committed by renaming its sidecar into place after its
records, so a sidecar means a complete shard, and a re-run skips it (resume) unless the shard's
items or the audio settings changed (the sidecar carries a fingerprint of both) or its records
file is missing, empty or truncated (the ArrayRecord footer's count differs from the sidecar's):
such a shard is named and rebuilt.

Everything streams: items are cut into shards as the listing yields them, at most two shards per
worker are in flight, and the per-split outputs are assembled from the sidecars on disk. Memory
does not grow with the number of clips (`audiotl bench --only prepare` measures it).
"""
import collections
import concurrent.futures
import datetime
import hashlib
import json
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
import zipfile
from pathlib import Path

from array_record.python.array_record_module import ArrayRecordWriter
import numpy as np
import tqdm

import audiotl_jax
from audiotl_jax.data import inventory, records
from audiotl_jax.data.dataset import FORMAT, LOGS, shard_damage
from audiotl_jax.data.decode import Skip, load_clip
from audiotl_jax.data.diskindex import DiskIndex
from audiotl_jax.data.readers.common import DatasetListing
from audiotl_jax.errors import UserError

# Uncompressed: int16 PCM barely compresses (zstd took 655 MB of audio to 622 MB) and zstd made
# a record read 4x slower (0.27 ms vs 0.067 ms a 10 s clip). Each chunk's header names its
# compression, so shards an earlier prepare wrote with zstd still read, and FORMAT is unchanged.
# group_size 1: one record per chunk, so a random read decodes only that record.
WRITER_OPTIONS = "group_size:1,uncompressed"


def _die_with_parent(parent: int) -> None:
  """Worker initializer: the worker exits when the prepare process dies, even by SIGKILL.

  The pool's own shutdown never runs then, and orphaned workers would go on decoding (and hold
  the output folder) until their queue broke.
  """
  if sys.platform.startswith("linux"):
    try:
      import ctypes  # pylint: disable=g-import-not-at-top
      pr_set_pdeathsig = 1
      ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
      pass  # no prctl (e.g. another libc): the polling thread below still covers it

  def watch():
    # Also the fallback off Linux, and the guard for a parent that died before prctl took effect.
    while os.getppid() == parent:
      time.sleep(0.5)
    os._exit(1)  # pylint: disable=protected-access  (no cleanup: the parent is gone)

  threading.Thread(target=watch, daemon=True, name="die-with-parent").start()


def _atomic_write(path: Path, write) -> None:
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "wb") as f:
    write(f)
  os.replace(tmp, path)


def _write_json(path: Path, obj) -> None:
  _atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1).encode()))


def _write_shard(task: dict) -> dict:
  """Worker: one shard's records, then its sidecar (the commit). Returns the sidecar."""
  out_dir, stem = Path(task["out_dir"]), task["stem"]
  tmp = out_dir / f"{stem}.array_record.tmp"
  side = {"fingerprint": task["fingerprint"], "stem": stem, "split": task["split"], "ids": [],
          "labels": [], "num_samples": [], "skipped": [], "notes": [], "source_rates": {}}
  writer = ArrayRecordWriter(str(tmp), WRITER_OPTIONS)
  for id_, path, labels, start, duration in task["items"]:
    notes, info = [], {}
    try:
      audio = load_clip(path, task["sample_rate"], task["clip_seconds"], start=start,
                        duration=duration, notes=notes, info=info)
    except Skip as e:
      side["skipped"].append({"split": task["split"], "id": id_, "path": path, "reason": str(e)})
      continue
    side["notes"] += [{"split": task["split"], "id": id_, "path": path, "note": n} for n in notes]
    writer.write(records.encode(id=id_, audio=audio, labels=labels))
    side["ids"].append(id_)
    side["labels"].append(labels)
    side["num_samples"].append(len(audio))
    rate = str(info["sample_rate"])  # a JSON key
    side["source_rates"][rate] = side["source_rates"].get(rate, 0) + 1
  writer.close()
  os.replace(tmp, out_dir / f"{stem}.array_record")
  _write_json(out_dir / f"{stem}.json", side)
  return side


def _read_sidecar(path: Path) -> dict | None:
  try:
    return json.loads(path.read_text())
  except (FileNotFoundError, json.JSONDecodeError):
    return None  # absent or torn: the shard is (re)done


def _shard_tasks(listing: DatasetListing, out_dir: Path, shard_size: int, settings: list,
                 shards: dict, tally: inventory.Tally):
  """The listing's items, checked, cut into shard tasks per split in listing order, as they come.

  Fills `shards` (split -> its stems, in order of the split's first item) and counts the items.
  """
  class_index = {c["id"]: i for i, c in enumerate(listing.classes)}
  buffers = {}

  def task(split, k, items):
    fingerprint = hashlib.sha1(json.dumps([*settings, items]).encode()).hexdigest()
    stem = f"{split}-{k:05d}"
    shards[split].append(stem)
    return {"out_dir": str(out_dir), "stem": stem, "split": split, "items": items,
            "fingerprint": fingerprint, "sample_rate": settings[0], "clip_seconds": settings[1]}

  with DiskIndex() as seen:
    for item in listing.items:
      unknown = [label for label in item.labels if label not in class_index]
      if unknown:
        raise UserError(f"dataset {listing.name!r}, item {item.id!r}: labels {unknown} are not "
                        "among the listing's classes")
      if not re.fullmatch(r"[\w.-]+", item.split):
        raise UserError(f"dataset {listing.name!r}, item {item.id!r}: split {item.split!r} must "
                        "be letters, digits, '_', '-' or '.' (it names files)")
      if not seen.add(f"{item.split}/{item.id}"):
        raise UserError(f"dataset {listing.name!r}: id {item.id!r} occurs twice in split "
                        f"{item.split!r}")
      tally.items += 1
      shards.setdefault(item.split, [])
      buf = buffers.setdefault(item.split, [])
      buf.append((item.id, str(item.path), [class_index[label] for label in item.labels],
                  float(item.start), item.duration))
      if len(buf) == shard_size:
        yield task(item.split, len(shards[item.split]), buf)
        buffers[item.split] = []
  for split, buf in buffers.items():
    if buf:
      yield task(split, len(shards[split]), buf)


def _is_done(out_dir: Path, task: dict) -> int | None:
  """The number of items of a shard already committed by an earlier run, else None."""
  side = _read_sidecar(out_dir / f"{task['stem']}.json")
  if side is None or side.get("fingerprint") != task["fingerprint"]:
    return None
  shard = out_dir / f"{task['stem']}.array_record"
  damage = shard_damage(shard, len(side["ids"]))
  if damage is not None:
    # Found here, not at the end of a training run that reads it.
    tqdm.tqdm.write(f"prepare: shard {shard} is {damage}; rebuilding it", file=sys.stderr)
    return None
  return len(side["ids"]) + len(side["skipped"])


def _run_shards(tasks, out_dir: Path, num_workers: int, bar) -> None:
  """Writes every shard not already done; in worker processes once there are two to do."""
  pool, pending, first = None, set(), None

  def drain(until: int):
    nonlocal pending
    while len(pending) > until:
      finished, pending = concurrent.futures.wait(
          pending, return_when=concurrent.futures.FIRST_COMPLETED)
      for f in finished:
        side = f.result()
        bar.update(len(side["ids"]) + len(side["skipped"]))

  try:
    for t in tasks:
      n = _is_done(out_dir, t)
      if n is not None:
        bar.update(n)
      elif num_workers <= 1:
        _write_shard(t)
        bar.update(len(t["items"]))
      elif first is None and pool is None:
        first = t  # a single shard to do is not worth starting workers for
      else:
        if pool is None:
          # spawn, not fork: the parent may have started jax (threads), which fork would corrupt.
          pool = concurrent.futures.ProcessPoolExecutor(
              num_workers, mp_context=multiprocessing.get_context("spawn"),
              initializer=_die_with_parent, initargs=(os.getpid(),))
          pending.add(pool.submit(_write_shard, first))
        pending.add(pool.submit(_write_shard, t))
        drain(2 * num_workers)  # bounded: the listing is read only as fast as shards are written
    if first is not None and pool is None:
      _write_shard(first)
      bar.update(len(first["items"]))
    drain(0)
  finally:
    if pool is not None:
      pool.shutdown(cancel_futures=True)


def _npy_member(zf: zipfile.ZipFile, name: str, dtype, n: int, chunks) -> None:
  """One `name.npy` array of `n` elements in an .npz, written chunk by chunk (np.savez would need
  the whole array in memory)."""
  dtype = np.dtype(dtype)
  with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
    np.lib.format.write_array_header_1_0(
        f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n,)})
    for chunk in chunks:
      f.write(np.ascontiguousarray(chunk, dtype).tobytes())


def _assemble_split(out_dir: Path, split: str, stems: list[str], num_classes: int,
                    sample_rate: int, logs: dict, tally: inventory.Tally) -> dict:
  """The split's manifest entry and `<split>.labels.npz`, from its sidecars, one at a time.
  Adds the split's records to `tally`'s source sample rates."""
  counts = np.zeros(num_classes, np.int64)
  shard_records = []
  n = n_values = samples = 0
  id_len = 1
  for stem in stems:
    side = _read_sidecar(out_dir / f"{stem}.json")
    n += len(side["ids"])
    shard_records.append(len(side["ids"]))
    n_values += sum(len(ls) for ls in side["labels"])
    samples += sum(side["num_samples"])
    id_len = max([id_len] + [len(i) for i in side["ids"]])
    for ls in side["labels"]:
      counts[np.unique(np.asarray(ls, np.int64))] += 1
    for s in side["skipped"]:
      tally.log(logs, "skipped", s, s["reason"])
    for note in side["notes"]:
      tally.log(logs, "notes", note, note["note"])
    # Shards kept from a prepare that did not record rates: said, not guessed.
    tally.source_rates.update(side.get("source_rates", {"unknown": len(side["ids"])}))

  def column(key, f):
    for stem in stems:
      yield f(_read_sidecar(out_dir / f"{stem}.json")[key])

  def offsets():
    end = 0
    yield [0]
    for lens in column("labels", lambda ls: [len(x) for x in ls]):
      yield end + np.cumsum(lens, dtype=np.int64)
      end += sum(lens)

  def write(f):
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
      _npy_member(zf, "ids", f"<U{id_len}", n, column("ids", lambda x: x))
      _npy_member(zf, "offsets", np.int64, n + 1, offsets())
      _npy_member(zf, "values", np.int32, n_values,
                  column("labels", lambda ls: [v for x in ls for v in x]))

  _atomic_write(out_dir / f"{split}.labels.npz", write)
  # shard_records: lets a reader check each shard against its footer without the sidecars.
  return {"shards": [f"{stem}.array_record" for stem in stems], "shard_records": shard_records,
          "num_records": n, "class_counts": counts.tolist(),
          "total_seconds": samples / sample_rate}


def prepare(listing: DatasetListing, out_dir, *, sample_rate: int = 16000,
            clip_seconds: float | None = None, shard_size: int = 1024,
            num_workers: int | None = None, progress: bool = True) -> dict:
  """Decodes every item of `listing` into ArrayRecord shards in `out_dir`; returns the manifest.

  `clip_seconds=None` keeps full lengths; otherwise clips are cropped from the start or zero-padded
  at the end. `num_workers` processes (default: all cores; <= 1 runs in this process) each write
  whole shards. Files that cannot be decoded are skipped with their reason, never fatal. Workers
  are spawned (they re-import the calling script), so a script calling this needs the usual
  `if __name__ == "__main__":` guard.

  Every source row is accounted for (`inventory.py`): the manifest's `counts` (rows = records +
  skipped + dropped) and `reasons` (per kind) summarise `skipped.jsonl` (files, with reasons),
  `problems.jsonl` (the listing's) and `notes.jsonl` (files kept despite damage), and
  `source_sample_rates` counts the records per rate their files had before resampling. For
  AudioSet it also has `coverage` (per class: listed, found, prepared, missing).
  """
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  # Shards may change below; until the new manifest is written the directory must not open.
  (out_dir / "manifest.json").unlink(missing_ok=True)
  num_workers = os.cpu_count() if num_workers is None else num_workers
  tally, shards = inventory.Tally(), {}
  tasks = _shard_tasks(listing, out_dir, shard_size, [sample_rate, clip_seconds], shards, tally)
  total = len(listing.items) if isinstance(listing.items, list) else None
  with tqdm.tqdm(total=total, unit="clip", desc=f"prepare {listing.name}",
                 disable=not progress) as bar:
    _run_shards(tasks, out_dir, num_workers, bar)

  manifest = {
      "format": FORMAT, "dataset": listing.name, "task": listing.task,
      "sample_rate": sample_rate, "clip_seconds": clip_seconds,
      "classes": [{"index": i, "id": c["id"], "name": c["name"]}
                  for i, c in enumerate(listing.classes)],
      "splits": {}, "logs": {name: f"{name}.jsonl" for name in LOGS},
      "source": dict(listing.source) or {"reader": listing.name},
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "audiotl_version": audiotl_jax.__version__,
  }
  logs = {name: open(out_dir / f"{name}.jsonl.tmp", "w", encoding="utf-8") for name in LOGS}
  try:
    for split, stems in shards.items():
      manifest["splits"][split] = _assemble_split(out_dir, split, stems, len(listing.classes),
                                                  sample_rate, logs, tally)
    for p in listing.problems:
      tally.problem(logs, p)
  finally:
    for f in logs.values():
      f.close()
  for name in LOGS:
    os.replace(out_dir / f"{name}.jsonl.tmp", out_dir / f"{name}.jsonl")
  manifest["counts"], manifest["reasons"] = tally.counts(manifest), tally.reasons
  manifest["source_sample_rates"] = tally.rates()
  if listing.coverage:
    manifest["coverage"] = inventory.coverage(listing, manifest)
  _write_json(out_dir / "manifest.json", manifest)
  print(inventory.summary(manifest, out_dir))
  return manifest


def prepare_once(raw, out_dir, reader: str, **kwargs) -> Path:
  """`out_dir`, prepared from the `reader` layout at `raw` (`prepare`'s `kwargs`) unless it
  already holds a prepared dataset: the demo's, the benches' and the tests' data steps."""
  from audiotl_jax.data import readers  # pylint: disable=g-import-not-at-top  (its imports)
  out_dir = Path(out_dir)
  if not (out_dir / "manifest.json").exists():
    prepare(readers.get_reader(reader)(Path(raw)), out_dir, **kwargs)
  return out_dir
