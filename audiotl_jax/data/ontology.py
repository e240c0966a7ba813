"""The AudioSet ontology, its 527 trainable classes, segment lists and subset selection.

Pre-training subsets are named by ontology nodes ("Animal", "Music", "Animal+Music"): a subset is
the trainable classes (those in `class_labels_indices.csv`) among the descendants of the named
nodes. Records carry label indices into the 527-class list, so selection works on index arrays.
"""
import csv
import dataclasses
import difflib
import json
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from audiotl_jax import resources
from audiotl_jax.errors import UserError

DEFAULT_DIR = Path(os.environ.get("AUDIOTL_AUDIOSET_DIR") or resources.path("audioset"))


@dataclasses.dataclass(frozen=True)
class Segment:
  ytid: str
  start: float
  end: float
  labels: tuple[str, ...]


def _parse_segments(path) -> Iterator[tuple[int, Segment | None, str | None]]:
  """Yields (line number, segment or None, problem or None) for every data row of a segment CSV."""
  path = Path(path)
  if not path.is_file():
    raise UserError(f"segment list {path} does not exist")
  with open(path, newline="", encoding="utf-8-sig") as f:
    # skipinitialspace handles the official `, "a,b"` form; comments and the header are skipped.
    reader = csv.reader(f, skipinitialspace=True)
    for row in reader:
      line = reader.line_num
      if not row or row[0].startswith("#") or row[0] == "YTID":
        continue
      if len(row) != 4:
        yield line, None, f"expected 4 columns (YTID, start, end, labels), got {len(row)}"
        continue
      try:
        start, end = float(row[1]), float(row[2])
      except ValueError:
        yield line, None, f"start/end seconds must be numbers, got {row[1]!r}, {row[2]!r}"
        continue
      if not (0 <= start <= end):
        yield line, None, f"need 0 <= start <= end, got start={start}, end={end}"
        continue
      labels = tuple(x.strip() for x in row[3].split(",") if x.strip())
      if not labels:
        yield line, None, "empty positive_labels"
        continue
      yield line, Segment(row[0].strip(), start, end, labels), None


def iter_segments(path) -> Iterator[Segment]:
  """Streams the segments of an AudioSet segment CSV (official `#` form or plain header form).

  Raises UserError naming the file and line at the first bad row.
  """
  for line, segment, problem in _parse_segments(path):
    if problem is not None:
      raise UserError(f"{path}, line {line}: {problem}")
    yield segment


def read_segments(path, on_error: str = "raise"):
  """Reads a whole segment CSV.

  on_error="raise" returns list[Segment] and raises UserError at the first bad row;
  on_error="collect" skips bad rows and returns (segments, problems) with problems a list of
  (line number, reason), for inspecting a hand-made or partially corrupt list.
  """
  if on_error == "raise":
    return list(iter_segments(path))
  if on_error != "collect":
    raise UserError(f"on_error must be 'raise' or 'collect', got {on_error!r}")
  segments, problems = [], []
  for line, segment, problem in _parse_segments(path):
    if problem is None:
      segments.append(segment)
    else:
      problems.append((line, problem))
  return segments, problems


@dataclasses.dataclass(frozen=True)
class Node:
  mid: str
  name: str
  children: tuple[str, ...]
  restrictions: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Subset:
  """Trainable classes of a subset; `indices` index the 527-class list, sorted ascending."""
  name: str
  mids: tuple[str, ...]
  indices: np.ndarray = dataclasses.field(compare=False, repr=False)

  def __len__(self):
    return len(self.mids)


class Ontology:
  """The ontology graph plus the official class list (index order of `class_labels_indices.csv`)."""

  def __init__(self, nodes: dict[str, Node], classes: Sequence[str], class_names: Sequence[str]):
    self.nodes = nodes
    self.classes = tuple(classes)
    self.class_names = tuple(class_names)
    self.class_index = {mid: i for i, mid in enumerate(self.classes)}
    self._by_name = {n.name.lower(): n.mid for n in nodes.values()}
    self._parents: dict[str, list[str]] = {mid: [] for mid in nodes}
    for n in nodes.values():
      for c in n.children:
        self._parents[c].append(n.mid)
    self._descendants: dict[str, frozenset[str]] = {}

  @classmethod
  def load(cls, dir=None) -> "Ontology":
    d = Path(DEFAULT_DIR if dir is None else dir)
    onto_path, labels_path = d / "ontology.json", d / "class_labels_indices.csv"
    for p in (onto_path, labels_path):
      if not p.is_file():
        raise UserError(f"{p} does not exist; point AUDIOTL_AUDIOSET_DIR at the AudioSet metadata")
    try:
      raw = json.loads(onto_path.read_text(encoding="utf-8"))
      nodes = {n["id"]: Node(n["id"], n["name"], tuple(n["child_ids"]),
                             tuple(n.get("restrictions", ()))) for n in raw}
    except (ValueError, KeyError, TypeError) as e:
      raise UserError(f"{onto_path}: not an AudioSet ontology ({e!r})") from None
    with open(labels_path, newline="", encoding="utf-8-sig") as f:
      rows = list(csv.DictReader(f))
    if not rows or {"index", "mid", "display_name"} - set(rows[0]):
      raise UserError(f"{labels_path}: expected header index,mid,display_name")
    for line, r in enumerate(rows, start=2):
      if r["mid"] not in nodes or r["index"] != str(line - 2):
        raise UserError(f"{labels_path}, line {line}: index must be {line - 2} and the MID must be "
                        f"in ontology.json; got index {r['index']!r}, MID {r['mid']!r}")
    return cls(nodes, [r["mid"] for r in rows], [r["display_name"] for r in rows])

  def find(self, name_or_mid: str) -> str:
    """The MID for a MID or a node name (case-insensitive); UserError with close matches if none."""
    key = name_or_mid.strip()
    if key in self.nodes:
      return key
    if key.lower() in self._by_name:
      return self._by_name[key.lower()]
    # Match on lower case (as lookup does) and report the ontology's own spelling.
    close = [self.nodes[self._by_name[n]].name
             for n in difflib.get_close_matches(key.lower(), self._by_name, n=5, cutoff=0.6)]
    hint = f"close matches: {', '.join(repr(c) for c in close)}" if close else (
        f"names are as in ontology.json, e.g. top-level: "
        f"{', '.join(repr(self.nodes[m].name) for m in self.top_level())}")
    raise UserError(f"unknown AudioSet class or ontology node {name_or_mid!r}; {hint}")

  def descendants(self, mid: str, include_self: bool = True) -> frozenset[str]:
    mid = self.find(mid)
    if mid not in self._descendants:
      seen, stack = {mid}, [mid]
      while stack:
        for c in self.nodes[stack.pop()].children:
          if c not in seen:
            seen.add(c)
            stack.append(c)
      self._descendants[mid] = frozenset(seen)
    out = self._descendants[mid]
    return out if include_self else out - {mid}

  def top_level(self) -> tuple[str, ...]:
    """The roots (nodes that are nobody's child), in ontology.json order."""
    return tuple(m for m, parents in self._parents.items() if not parents)

  def branch_of(self, mid: str) -> set[str]:
    """The top-level roots above a node; several when it sits under more than one branch."""
    mid = self.find(mid)
    seen, stack = {mid}, [mid]
    while stack:
      for p in self._parents[stack.pop()]:
        if p not in seen:
          seen.add(p)
          stack.append(p)
    return {m for m in seen if not self._parents[m]}

  def subset(self, names: str | Sequence[str]) -> Subset:
    """The trainable classes under any of the named nodes; "Animal+Music" is a union."""
    parts = names.split("+") if isinstance(names, str) else list(names)
    parts = [p.strip() for p in parts]
    if not parts or not all(parts):
      raise UserError(f"subset {names!r}: expected node names or MIDs joined by '+'")
    mids = [self.find(p) for p in parts]
    covered = set().union(*(self.descendants(m) for m in mids))
    indices = np.array(sorted(self.class_index[m] for m in covered if m in self.class_index),
                       dtype=np.int64)
    name = "+".join(self.nodes[m].name for m in mids)
    if indices.size == 0:
      raise UserError(f"subset {name!r} has no trainable classes (none of it is in the 527 list)")
    return Subset(name, tuple(self.classes[i] for i in indices), indices)


def subset_record_indices(record_labels: Sequence[np.ndarray], subset: Subset) -> np.ndarray:
  """Indices of the records with at least one positive label in the subset."""
  lengths = np.array([np.size(l) for l in record_labels], dtype=np.int64)
  if lengths.sum() == 0:
    return np.zeros(0, dtype=np.int64)
  flat = np.concatenate([np.asarray(l, dtype=np.int64).ravel() for l in record_labels])
  owner = np.repeat(np.arange(len(lengths)), lengths)
  return np.unique(owner[np.isin(flat, subset.indices)])


def restrict_labels(labels, subset: Subset) -> np.ndarray:
  """Global label indices -> subset-local indices (order kept), dropping labels outside."""
  labels = np.asarray(labels, dtype=np.int64).ravel()
  pos = np.searchsorted(subset.indices, labels)
  pos = np.minimum(pos, len(subset.indices) - 1)
  return pos[subset.indices[pos] == labels].astype(np.int32)


def subset_class_map(subset: Subset, num_total: int = 527) -> np.ndarray:
  """An int32 lookup table: global class index -> subset-local index, -1 outside the subset."""
  if subset.indices.size and subset.indices[-1] >= num_total:
    raise UserError(f"subset {subset.name!r} has class index {subset.indices[-1]} >= {num_total}")
  table = np.full(num_total, -1, dtype=np.int32)
  table[subset.indices] = np.arange(len(subset.indices), dtype=np.int32)
  return table


def _prefix_draw(n: int, k: int, seed: int) -> np.ndarray:
  # One permutation per (seed, n) and a prefix of it: smaller draws nest inside larger ones.
  return np.random.default_rng(seed).permutation(n)[:k]


def fraction_indices(indices, fraction: float, seed: int) -> np.ndarray:
  """A seeded, sorted draw of round(fraction * len) (at least 1) of `indices`.

  Nested: for one seed, the draw for a smaller fraction is a subset of the draw for a larger one.
  """
  indices = np.asarray(indices)
  if not 0 < fraction <= 1:
    raise UserError(f"data fraction must be in (0, 1], got {fraction}")
  if indices.size == 0:
    return indices.copy()
  k = max(1, int(round(fraction * indices.size)))
  return np.sort(indices[_prefix_draw(indices.size, k, seed)])


def sample_classes(subset: Subset, num_classes: int, seed: int) -> Subset:
  """A seeded draw of `num_classes` classes of a subset; smaller draws nest inside larger ones."""
  if not 1 <= num_classes <= len(subset):
    raise UserError(f"subset {subset.name!r} has {len(subset)} classes; cannot draw {num_classes}")
  pick = np.sort(_prefix_draw(len(subset), num_classes, seed))
  return Subset(f"{subset.name}-{num_classes}cls-seed{seed}",
                tuple(subset.mids[i] for i in pick), subset.indices[pick])


def label_counts(segments: Iterable[Segment], ontology: Ontology) -> dict[str, int]:
  """Clips per trainable class (all 527, index order); labels outside the list are ignored."""
  counts = np.zeros(len(ontology.classes), dtype=np.int64)
  for s in segments:
    for i in {ontology.class_index.get(m, -1) for m in s.labels} - {-1}:
      counts[i] += 1
  return dict(zip(ontology.classes, counts.tolist()))


def plan(ontology: Ontology, segments: Iterable[Segment],
         subsets: Sequence[str] = ()) -> list[dict]:
  """Classes and clips per top-level branch and per requested subset.

  Each row is {name, kind ("branch"/"subset"/"unknown"), classes, clips}; clips counts segments
  with at least one label in the subset. A final "unknown" row (only when there are any) counts
  the segments with labels outside the 527 classes (`classes` = distinct unknown MIDs).
  """
  labels, unknown_mids, unknown_rows = [], set(), 0
  for s in segments:
    idx = [ontology.class_index.get(m, -1) for m in s.labels]
    if -1 in idx:
      unknown_rows += 1
      unknown_mids.update(m for m in s.labels if m not in ontology.class_index)
    labels.append(np.array([i for i in idx if i >= 0], dtype=np.int64))
  rows = []
  targets = [("branch", ontology.nodes[m].name) for m in ontology.top_level()]
  targets += [("subset", s) for s in subsets or ()]  # None: an argparse append with no uses
  for kind, name in targets:
    sub = ontology.subset(name)
    rows.append({"name": sub.name, "kind": kind, "classes": len(sub),
                 "clips": int(subset_record_indices(labels, sub).size)})
  if unknown_rows:
    rows.append({"name": "(labels outside the 527 classes)", "kind": "unknown",
                 "classes": len(unknown_mids), "clips": unknown_rows})
  return rows


def format_plan(rows: Sequence[dict]) -> str:
  """An aligned text table of `plan` rows."""
  header = ("subset", "kind", "classes", "clips")
  body = [(r["name"], r.get("kind", ""), str(r["classes"]), str(r["clips"])) for r in rows]
  widths = [max(len(x[i]) for x in [header, *body]) for i in range(4)]
  lines = []
  for x in [header, *body]:
    lines.append(f"{x[0]:<{widths[0]}}  {x[1]:<{widths[1]}}  "
                 f"{x[2]:>{widths[2]}}  {x[3]:>{widths[3]}}")
  lines.insert(1, "-" * len(lines[0]))
  return "\n".join(lines)


def label_set_similarity(subset_a, subset_b, ontology: Ontology) -> float:
  """Jaccard similarity of the descendant closures (all ontology nodes below, self included).

  Closure first so that related label sets overlap even when their trainable classes do not
  (a subset holding "Dog" and one holding "Bark" share the node "Bark"). Accepts Subsets or
  names as for `Ontology.subset`.
  """
  closures = []
  for s in (subset_a, subset_b):
    s = s if isinstance(s, Subset) else ontology.subset(s)
    closures.append(set().union(*(ontology.descendants(m) for m in s.mids)))
  a, b = closures
  return len(a & b) / len(a | b) if a | b else 1.0
