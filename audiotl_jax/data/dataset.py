"""A folder written by `audiotl prepare`, opened through its manifest (the read side of
`shard_writer`): splits, labels of every record without reading audio, the JSONL logs, and
random access to the records for Grain.

The folder may be on object storage (`gs://...`): every file is read through `fileio.path`
(epath), and Grain's ArrayRecord source is given the shards' path strings.
"""
import io
import json

from etils.epath import Path
import numpy as np

from audiotl_jax import fileio
from audiotl_jax.errors import UserError

# /2: the skipped files, problems and notes moved from the manifest into JSONL files.
FORMAT = "audiotl-arrayrecord/2"
LOGS = ("skipped", "problems", "notes")


def _footer(path) -> tuple[int, bool]:
  """(records, ok) as the ArrayRecord footer of the shard at `path` gives them; no record read."""
  # Imported here: opening a manifest (and the labels index) must not need array_record.
  from array_record.python.array_record_module import ArrayRecordReader  # pylint: disable=g-import-not-at-top
  reader = ArrayRecordReader(str(path), "readahead_buffer_size:0")
  try:
    return reader.num_records(), reader.ok()
  finally:
    reader.close()


def shard_damage(path: Path, num_records: int | None) -> str | None:
  """Why the ArrayRecord shard at `path` cannot be read as `num_records` records, else None.

  `num_records=None` (count unknown) checks only that the file is there, non-empty and readable.

  Cheap: the record count comes from the file's footer; no record is read. A truncated or emptied
  file would otherwise pass unnoticed until the records past the damage are read (often only at
  the final test evaluation).
  """
  try:
    size = fileio.size(path)
  except FileNotFoundError:
    return "missing"
  if size == 0:
    return "empty (0 bytes)"
  try:
    found, ok = _footer(path)
  except Exception as e:  # pylint: disable=broad-except  (any reader error means damage)
    return f"unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
  if not ok or (num_records is not None and found != num_records):
    # A torn footer reads as 0 records with ok() False, not as an exception.
    return f"truncated or damaged ({found} records readable, {num_records} expected)"
  return None


def shard_error(path: Path, damage: str) -> UserError:
  """The error for a damaged shard (`damage` as `shard_damage` words it): the shard, and the fix."""
  folder = fileio.path(path).parent
  return UserError(f"prepared dataset {folder}: shard {path} is {damage}; run `audiotl prepare` "
                   f"again on {folder} to rebuild it")


def _check_manifest(m: dict, path: Path) -> None:
  """What a reader of the manifest indexes, checked once at open: a hand-edited or damaged
  manifest otherwise ends in a KeyError or IndexError far from the file."""
  if not isinstance(m.get("classes"), list):
    raise UserError(f"{path}: no 'classes' list (the label names, in index order)")
  if not isinstance(m.get("splits"), dict):
    raise UserError(f"{path}: no 'splits' (split name -> its shards and counts); run "
                    "`audiotl prepare` again there")
  n = len(m["classes"])
  for split, entry in m["splits"].items():
    missing = [k for k in ("shards", "num_records")
               if not isinstance(entry, dict) or k not in entry]
    if missing:
      raise UserError(f"{path}: split {split!r} has no {', '.join(map(repr, missing))}")
    counts = entry.get("class_counts")
    if counts is not None and len(counts) != n:
      raise UserError(f"{path}: split {split!r} counts labels of {len(counts)} classes, but "
                      f"'classes' lists {n}")


class PreparedDataset:
  """A directory written by `prepare`, opened through its manifest."""

  def __init__(self, path):
    self.path = fileio.path(path)
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
    if found == "audiotl-arrayrecord/1":
      raise UserError(f"{manifest_path}: prepared by an older audiotl (format {found!r}); run "
                      "prepare again into the same directory (its finished shards are kept)")
    if found != FORMAT:
      raise UserError(f"{manifest_path}: expected format {FORMAT!r}, got {found!r}")
    _check_manifest(self.manifest, manifest_path)
    self._labels = {}
    self._verified = set()

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
      path = self.path / f"{split}.labels.npz"
      # Read whole, then parsed: np.load needs a seekable file, and one read is one request.
      with np.load(io.BytesIO(path.read_bytes())) as z:
        labels = {k: z[k] for k in ("ids", "offsets", "values")}
      values = labels["values"]
      bad = values[(values < 0) | (values >= self.num_classes)][:1]
      if bad.size:
        # One vectorised pass per split; past here a label indexes class tables unchecked.
        raise UserError(f"{self.path / 'manifest.json'}: {path} holds label {int(bad[0])}, but "
                        f"'classes' lists {self.num_classes} (indices 0-{self.num_classes - 1})")
      self._labels[split] = labels
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

  def log(self, name: str):
    """The records of one of the JSONL logs (`LOGS`: skipped, problems, notes), one at a time."""
    if name not in LOGS:
      raise UserError(f"prepared dataset {self.path}: no log {name!r}; logs: {', '.join(LOGS)}")
    with (self.path / self.manifest["logs"][name]).open("r") as f:  # epath: always UTF-8
      for line in f:
        yield json.loads(line)

  def num_samples(self, split: str) -> np.ndarray | None:
    """Stored samples of every record of `split`, from the shard sidecars (no audio read);
    None when a sidecar is missing (a folder written by hand)."""
    out = []
    for name in self._split(split)["shards"]:
      side = self.path / (name.removesuffix(".array_record") + ".json")
      try:
        out.extend(json.loads(side.read_text())["num_samples"])
      except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
        return None
    return np.asarray(out, np.int64)

  def _shard_counts(self, split: str) -> list:
    """Records per shard of `split`: from the manifest, or (older manifests) the sidecars; None
    for a shard whose count is unknown (a manifest written by hand, without sidecars)."""
    entry = self._split(split)
    if "shard_records" in entry:
      return entry["shard_records"]
    counts = []
    for name in entry["shards"]:
      side = self.path / (name.removesuffix(".array_record") + ".json")
      try:
        counts.append(len(json.loads(side.read_text())["ids"]))
      except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
        counts.append(None)
    return counts

  def verify(self, split: str) -> None:
    """Raises a UserError naming the first damaged shard of `split`; each split is checked once.

    Called by `source`, so a damaged shard stops a run when it starts, not at its final test.
    """
    if split in self._verified:
      return
    for name, n in zip(self._split(split)["shards"], self._shard_counts(split)):
      damage = shard_damage(self.path / name, n)
      if damage is not None:
        raise shard_error(self.path / name, damage)
    self._verified.add(split)

  def source(self, split: str):
    """Random access to the records of `split`: record i is entry i of `labels(split)`, as
    bytes (`[i]`) or read for a batch row (`clip(i)`, straight from the file: `direct`)."""
    self.verify(split)
    import grain  # pylint: disable=g-import-not-at-top  (workers of prepare never need it)
    from audiotl_jax.data import direct  # pylint: disable=g-import-not-at-top  (it imports this)
    paths = [str(self.path / name) for name in self._split(split)["shards"]]
    counts = [_footer(p)[0] if n is None else n for p, n in zip(paths, self._shard_counts(split))]
    return direct.DirectSource(grain.sources.ArrayRecordDataSource(paths), paths, counts,
                               enabled=direct.enabled())
