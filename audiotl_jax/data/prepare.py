"""Prepare: a `DatasetListing` -> ArrayRecord shards of int16 mono clips + `manifest.json`.

Layout of a prepared directory:
  <split>-<k:05d>.array_record  records (see `records.py`), items of the split in listing order
  <split>-<k:05d>.json          sidecar: ids, label indices, samples and skips of that shard
  <split>.labels.npz            ids, offsets (n+1), values: labels of every record of the split
  manifest.json                 written last; see `prepare`

The work unit is a shard. A shard is committed by renaming its sidecar into place after its
records, so a sidecar means a complete shard, and a re-run skips it (resume) unless the shard's
items or the audio settings changed (the sidecar carries a fingerprint of both).
"""
import collections
import datetime
import hashlib
import json
import multiprocessing
import os
import re
from pathlib import Path

from array_record.python.array_record_module import ArrayRecordWriter
import numpy as np
import tqdm

import audiotl_jax
from audiotl_jax.data import inventory, records
from audiotl_jax.data.decode import Skip, load_clip
from audiotl_jax.data.readers.common import DatasetListing
from audiotl_jax.errors import UserError

FORMAT = "audiotl-arrayrecord/1"
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
          "labels": [], "num_samples": [], "skipped": [], "notes": []}
  writer = ArrayRecordWriter(str(tmp), "group_size:1")
  for id_, path, labels, start, duration in task["items"]:
    notes = []
    try:
      audio = load_clip(path, task["sample_rate"], task["clip_seconds"], start=start,
                        duration=duration, notes=notes)
    except Skip as e:
      side["skipped"].append({"split": task["split"], "id": id_, "path": path, "reason": str(e)})
      continue
    side["notes"] += [{"split": task["split"], "id": id_, "path": path, "note": n} for n in notes]
    writer.write(records.encode(id=id_, audio=audio, labels=labels))
    side["ids"].append(id_)
    side["labels"].append(labels)
    side["num_samples"].append(len(audio))
  writer.close()
  os.replace(tmp, out_dir / f"{stem}.array_record")
  _write_json(out_dir / f"{stem}.json", side)
  return side


def _read_sidecar(path: Path) -> dict | None:
  try:
    return json.loads(path.read_text())
  except (FileNotFoundError, json.JSONDecodeError):
    return None  # absent or torn: the shard is (re)done


def prepare(listing: DatasetListing, out_dir, *, sample_rate: int = 16000,
            clip_seconds: float | None = None, shard_size: int = 1024,
            num_workers: int | None = None, progress: bool = True) -> dict:
  """Decodes every item of `listing` into ArrayRecord shards in `out_dir`; returns the manifest.

  Item metadata is held (ids, paths, labels); audio is streamed, one clip per worker at a time.
  `clip_seconds=None` keeps full lengths; otherwise clips are cropped from the start or zero-padded
  at the end. `num_workers` processes (default: all cores; <= 1 runs in this process) each write
  whole shards. Files that cannot be decoded are skipped with their reason, never fatal. Workers
  are spawned (they re-import the calling script), so a script calling this needs the usual
  `if __name__ == "__main__":` guard.

  The manifest accounts for every source row (`inventory.py`): `skipped` (files, with reasons),
  `problems` (the listing's), `notes` (files kept despite damage: truncated, clipped), `counts`
  (rows = records + skipped + dropped) and, for AudioSet, `coverage` (per class: listed, found,
  prepared, missing).
  """
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  # Shards may change below; until the new manifest is written the directory must not open.
  (out_dir / "manifest.json").unlink(missing_ok=True)
  class_index = {c["id"]: i for i, c in enumerate(listing.classes)}
  by_split = collections.defaultdict(list)  # insertion order = first appearance in the listing
  seen = set()
  for item in listing.items:
    unknown = [label for label in item.labels if label not in class_index]
    if unknown:
      raise UserError(f"dataset {listing.name!r}, item {item.id!r}: labels {unknown} are not "
                      "among the listing's classes")
    if not re.fullmatch(r"[\w.-]+", item.split):
      raise UserError(f"dataset {listing.name!r}, item {item.id!r}: split {item.split!r} must be "
                      "letters, digits, '_', '-' or '.' (it names files)")
    if (item.split, item.id) in seen:
      raise UserError(f"dataset {listing.name!r}: id {item.id!r} occurs twice in split "
                      f"{item.split!r}")
    seen.add((item.split, item.id))
    by_split[item.split].append((item.id, str(item.path),
                                 [class_index[label] for label in item.labels],
                                 float(item.start), item.duration))

  tasks, done = [], {}
  for split, items in by_split.items():
    for k, start in enumerate(range(0, len(items), shard_size)):
      chunk = items[start:start + shard_size]
      fingerprint = hashlib.sha1(
          json.dumps([sample_rate, clip_seconds, chunk]).encode()).hexdigest()
      stem = f"{split}-{k:05d}"
      tasks.append({"out_dir": str(out_dir), "stem": stem, "split": split, "items": chunk,
                    "fingerprint": fingerprint, "sample_rate": sample_rate,
                    "clip_seconds": clip_seconds})
      side = _read_sidecar(out_dir / f"{stem}.json")
      if (side is not None and side.get("fingerprint") == fingerprint
          and (out_dir / f"{stem}.array_record").is_file()):
        done[stem] = side
  todo = [t for t in tasks if t["stem"] not in done]

  num_workers = os.cpu_count() if num_workers is None else num_workers
  total = sum(len(t["items"]) for t in tasks)
  with tqdm.tqdm(total=total, unit="clip", desc=f"prepare {listing.name}",
                 disable=not progress) as bar:
    bar.update(total - sum(len(t["items"]) for t in todo))
    if num_workers <= 1 or len(todo) <= 1:
      for t in todo:
        done[t["stem"]] = _write_shard(t)
        bar.update(len(t["items"]))
    else:
      # spawn, not fork: the parent may have started jax (threads), which fork would corrupt.
      ctx = multiprocessing.get_context("spawn")
      with ctx.Pool(min(num_workers, len(todo))) as pool:
        for side in pool.imap_unordered(_write_shard, todo):
          done[side["stem"]] = side
          bar.update(len(side["ids"]) + len(side["skipped"]))

  manifest = {
      "format": FORMAT, "dataset": listing.name, "task": listing.task,
      "sample_rate": sample_rate, "clip_seconds": clip_seconds,
      "classes": [{"index": i, "id": c["id"], "name": c["name"]}
                  for i, c in enumerate(listing.classes)],
      "splits": {}, "skipped": [], "notes": [], "problems": list(listing.problems),
      "source": dict(listing.source) or {"reader": listing.name},
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "audiotl_version": audiotl_jax.__version__,
  }
  for split in by_split:
    sides = [done[t["stem"]] for t in tasks if t["split"] == split]
    counts = np.zeros(len(listing.classes), np.int64)
    ids, labels, samples = [], [], 0
    for side in sides:
      ids += side["ids"]
      labels += side["labels"]
      samples += sum(side["num_samples"])
      manifest["skipped"] += side["skipped"]
      manifest["notes"] += side.get("notes", [])
    for ls in labels:
      counts[np.unique(np.asarray(ls, np.int64))] += 1
    offsets = np.cumsum([0] + [len(ls) for ls in labels], dtype=np.int64)
    values = np.asarray([x for ls in labels for x in ls], np.int32)
    _atomic_write(out_dir / f"{split}.labels.npz", lambda f: np.savez(
        f, ids=np.asarray(ids, dtype=str), offsets=offsets, values=values))
    manifest["splits"][split] = {
        "shards": [f"{s['stem']}.array_record" for s in sides], "num_records": len(ids),
        "class_counts": counts.tolist(), "total_seconds": samples / sample_rate}
  manifest["counts"] = inventory.counts(manifest, len(seen))
  if listing.coverage:
    manifest["coverage"] = inventory.coverage(listing, manifest)
  _write_json(out_dir / "manifest.json", manifest)
  print(inventory.summary(manifest, out_dir))
  return manifest


class PreparedDataset:
  """A directory written by `prepare`, opened through its manifest."""

  def __init__(self, path):
    self.path = Path(path)
    manifest_path = self.path / "manifest.json"
    if not self.path.is_dir():
      raise UserError(f"prepared dataset {self.path}: no such directory (run prepare first)")
    try:
      self.manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
      raise UserError(f"prepared dataset {self.path}: no manifest.json (prepare did not finish "
                      "there, or this is not a prepared dataset)") from None
    except json.JSONDecodeError as e:
      raise UserError(f"{manifest_path}: not valid JSON ({e})") from None
    found = self.manifest.get("format") if isinstance(self.manifest, dict) else None
    if found != FORMAT:
      raise UserError(f"{manifest_path}: expected format {FORMAT!r}, got {found!r}")
    self._labels = {}

  classes = property(lambda self: self.manifest["classes"])
  num_classes = property(lambda self: len(self.manifest["classes"]))
  sample_rate = property(lambda self: self.manifest["sample_rate"])
  task = property(lambda self: self.manifest["task"])
  splits = property(lambda self: list(self.manifest["splits"]))

  def _split(self, split: str) -> dict:
    if split not in self.manifest["splits"]:
      raise UserError(f"prepared dataset {self.path} has no split {split!r}; "
                      f"splits: {', '.join(self.splits)}")
    return self.manifest["splits"][split]

  def num_records(self, split: str) -> int:
    return self._split(split)["num_records"]

  def _labels_npz(self, split: str) -> dict:
    self._split(split)
    if split not in self._labels:
      with np.load(self.path / f"{split}.labels.npz") as z:
        self._labels[split] = {k: z[k] for k in ("ids", "offsets", "values")}
    return self._labels[split]

  def labels_csr(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(offsets int64 (n+1,), values int32): record i has labels values[offsets[i]:offsets[i+1]]."""
    z = self._labels_npz(split)
    return z["offsets"], z["values"]

  def labels(self, split: str) -> list[np.ndarray]:
    offsets, values = self.labels_csr(split)
    return [values[a:b] for a, b in zip(offsets[:-1], offsets[1:])]

  def ids(self, split: str) -> np.ndarray:
    return self._labels_npz(split)["ids"]

  def source(self, split: str):
    """Random access to the records of `split`: record i is entry i of `labels(split)`."""
    import grain  # pylint: disable=g-import-not-at-top  (workers of prepare never need it)
    return grain.sources.ArrayRecordDataSource(
        [str(self.path / name) for name in self._split(split)["shards"]])
