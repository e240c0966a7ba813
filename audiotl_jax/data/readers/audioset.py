"""AudioSet: the official segment CSVs plus a folder of clips named as download tools name them.

Names matched (any of wav, flac, ogg, mp3; nested folders under a split's folder are searched):
  Y{ytid}_{start}_{end}.ext     the CSV's decimal seconds (`Y--aE2O5G5WE_30.000_40.000.wav`)
  {ytid}_{start}_{end}.ext      the same without the `Y`
  {ytid}_{start_ms}_{end_ms}.ext  integer milliseconds (`--aE2O5G5WE_30000_40000.flac`)
  {ytid}.ext / Y{ytid}.ext      the id alone (one segment per video, as in every official list)
YouTube ids are 11 characters and may contain `_` and `-`.

The CSVs are read line by line (one segment per line in every official list), so a row with
broken quoting costs that row, never the rows after it.
"""
import csv
import re
from pathlib import Path

from audiotl_jax.data.diskindex import DiskIndex
from audiotl_jax.data.readers.common import (DatasetListing, Item, ProblemLog, Streamed, audio_files, problem, require_dir, require_file)
from audiotl_jax.data.ontology import Ontology

OFFICIAL = {"balanced_train": "balanced_train_segments.csv",
            "unbalanced_train": "unbalanced_train_segments.csv",
            "eval": "eval_segments.csv"}

_SEGMENT_NAME = re.compile(
    r"^Y?(?P<ytid>[\w-]{11})_(?P<start>\d+(?:\.\d*)?)_(?P<end>\d+(?:\.\d*)?)$")
_YTID = re.compile(r"^[\w-]{11}$")


def parse_segment_line(line: str) -> tuple[tuple | None, str | None]:
  """One line of a segment CSV -> ((ytid, start, end, labels), None), (None, reason) or
  (None, None) for a comment, header or blank line."""
  s = line.strip()
  if not s or s.startswith("#") or s.partition(",")[0].strip() == "YTID":
    return None, None
  try:
    row = next(csv.reader([s], skipinitialspace=True, strict=True))
  except csv.Error as e:
    return None, f"broken quoting ({e})"
  if len(row) != 4:
    return None, (f"expected 4 columns (YTID, start_seconds, end_seconds, positive_labels), "
                  f"got {len(row)}")
  ytid = row[0].strip()
  if not _YTID.match(ytid):
    return None, f"YTID must be 11 letters, digits, '_' or '-', got {ytid!r}"
  try:
    start, end = float(row[1]), float(row[2])
  except ValueError:
    return None, f"start/end seconds must be numbers, got {row[1]!r}, {row[2]!r}"
  if not 0 <= start <= end:
    return None, f"need 0 <= start <= end, got start={start}, end={end}"
  labels = tuple(dict.fromkeys(x.strip() for x in row[3].split(",") if x.strip()))
  if not labels:
    return None, "empty positive_labels"
  return (ytid, start, end, labels), None


def _key(ytid: str, start_ms: int | None) -> str:
  return f"{ytid}/{'' if start_ms is None else start_ms}"


def file_index(folders: list[Path]) -> DiskIndex:
  """An on-disk index of the clips under `folders`: `_key(ytid, start in ms)` -> path, and
  `_key(ytid, None)` -> path for files named by the id alone. Where names collide (a clip both as
  .wav and .flac) the smallest path wins, so the choice does not depend on directory order."""

  def entries():
    for path in (p for folder in folders for p in audio_files(folder, ordered=False)):
      stem = path.name.rpartition(".")[0]
      m = _SEGMENT_NAME.match(stem)
      if m:
        start = m["start"]
        yield _key(m["ytid"], round(float(start) * 1000)), str(path)
        if "." not in start:
          # Integer times may be milliseconds (`{ytid}_{start_ms}_{end_ms}`); segment starts are
          # whole seconds in practice, so the two readings never collide.
          yield _key(m["ytid"], int(start)), str(path)
      elif len(stem) == 11 or (len(stem) == 12 and stem[0] == "Y"):
        yield _key(stem[-11:], None), str(path)

  index = DiskIndex()
  index.add_many(entries(), keep="smallest")
  return index


def audioset(root, splits: dict | None = None) -> DatasetListing:
  """AudioSet segment CSVs + audio under `root/audio/<split>/` (or `root/<split>/`), any depth.

  `splits` maps a split name to its segments CSV (relative to `root`, or absolute). The default is
  every official list found in `root` (`OFFICIAL`; balanced and eval at least). The listing's
  `coverage` holds, per split and class, the segments the CSV lists and those found on disk.

  The items are `Streamed`: each pass re-reads the CSVs and indexes the split folders on disk
  (SQLite), and the problems go to a `ProblemLog`, so listing the 2M-row unbalanced list holds
  nothing per row in memory.
  """
  root = require_dir(Path(root), "AudioSet root")
  if not splits:
    splits = {s: n for s, n in OFFICIAL.items() if s != "unbalanced_train" or (root / n).is_file()}
  csv_paths = {split: require_file(root / csv_name, f"AudioSet segments list for split {split!r}")
               for split, csv_name in splits.items()}
  onto = Ontology.load()
  index_of = {mid: i for i, mid in enumerate(onto.classes)}
  classes = [{"id": mid, "name": name} for mid, name in zip(onto.classes, onto.class_names)]
  listing = DatasetListing("audioset", "multilabel", classes, [], ProblemLog(),
                           {"reader": "audioset", "root": str(root), "splits": dict(splits)})

  def one_pass():
    listing.problems, coverage = ProblemLog(), {}
    for split, csv_path in csv_paths.items():
      folders = [f for f in (root / "audio" / split, root / split) if f.is_dir()]
      where = folders[0] if folders else root / "audio" / split  # where a missing file belongs
      # Plain lists: a numpy scatter-add costs more than the whole row at 2M rows.
      listed, found = [0] * len(classes), [0] * len(classes)
      with file_index(folders) as files, DiskIndex() as seen, \
          open(csv_path, newline="", encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, 1):
          seg, reason = parse_segment_line(line)
          if reason is not None:
            listing.problems.append(problem(split, None, csv_path, reason, row=line_no))
          if seg is None:
            continue
          ytid, start, end, mids = seg
          seg_id = f"{ytid}_{start:.3f}_{end:.3f}"
          if not seen.add(seg_id):
            listing.problems.append(problem(split, seg_id, csv_path, "duplicate id", row=line_no))
            continue
          labels = tuple(mid for mid in mids if mid in index_of)
          for mid in mids:
            if mid not in index_of:
              listing.problems.append(problem(split, seg_id, csv_path, f"unknown label {mid}",
                                              dropped=not labels, row=line_no))
          if not labels:
            continue
          hit = [index_of[m] for m in labels]
          for i in hit:
            listed[i] += 1
          path = files.get(_key(ytid, round(start * 1000))) or files.get(_key(ytid, None))
          if path is None:
            listing.problems.append(problem(split, seg_id, f"{where}/Y{seg_id}.wav",
                                            "missing file", row=line_no))
          else:
            for i in hit:
              found[i] += 1
            yield Item(seg_id, Path(path), labels, split)
      coverage[split] = {"listed": listed, "found": found}
    listing.coverage = coverage

  listing.items = Streamed(one_pass)
  return listing
