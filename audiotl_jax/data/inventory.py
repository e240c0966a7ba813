"""The accounting of a prepared dataset: every source row, and "what you have" per class.

`Tally` counts as prepare streams: rows = records + skipped files + dropped rows, and per log
(skipped, dropped, kept, notes) how often each kind of reason occurred; the records themselves go
to the JSONL logs. `coverage` (AudioSet): per split and class, the segments the CSV lists, found
on disk, and prepared. `summary` is what prepare prints (with the source sample rates when some
files were resampled).
"""
import collections
import dataclasses
import json
import re
from pathlib import Path

from audiotl_jax.data.readers.common import DatasetListing


def reason_kind(reason: str) -> str:
  """A reason without its particulars ("unreadable: <libsndfile message>" -> "unreadable"), so
  reasons can be counted: cut at the first ': ', ' (' or ', got '."""
  return re.split(r": | \(|, got ", reason, maxsplit=1)[0]


@dataclasses.dataclass
class Tally:
  items: int = 0  # listed items (rows that reached prepare)
  reasons: dict = dataclasses.field(default_factory=lambda: {
      k: collections.Counter() for k in ("skipped", "dropped", "kept", "notes")})
  # Records per sample rate of their source files (str: JSON keys; "unknown" for old shards).
  source_rates: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  _dropped_rows: int = 0
  _last_dropped: tuple | None = None

  def log(self, logs: dict, name: str, record: dict, reason: str) -> None:
    logs[name].write(json.dumps(record) + "\n")
    self.reasons[name][reason_kind(reason)] += 1

  def problem(self, logs: dict, p: dict) -> None:
    """A listing problem. A row may have several (two unknown labels); readers report them one
    after the other, so comparing with the previous one counts each dropped row once."""
    logs["problems"].write(json.dumps(p) + "\n")
    self.reasons["dropped" if p["dropped"] else "kept"][reason_kind(p["reason"])] += 1
    if p["dropped"]:
      key = (p["split"], p["id"], p["path"], p.get("row"))
      self._dropped_rows += key != self._last_dropped
      self._last_dropped = key

  def counts(self, manifest: dict) -> dict:
    """Every source row, accounted for: rows = records + skipped + dropped (listing problems)."""
    n = {k: sum(v.values()) for k, v in self.reasons.items()}
    return {"rows": self.items + self._dropped_rows,
            "records": sum(s["num_records"] for s in manifest["splits"].values()),
            "skipped": n["skipped"], "dropped": self._dropped_rows,
            "kept_with_problems": n["kept"], "notes": n["notes"]}

  def rates(self) -> dict:
    """`source_rates` for the manifest: by rate, lowest first, "unknown" last."""
    def order(r):
      return (not r.isdigit(), int(r) if r.isdigit() else 0)
    return {r: self.source_rates[r] for r in sorted(self.source_rates, key=order)
            if self.source_rates[r]}


def _format_rates(manifest: dict) -> list[str]:
  """One line when some records were resampled (or their rate is unknown), none when every file
  had the target rate: the common case stays as quiet as before."""
  rates, target = manifest.get("source_sample_rates", {}), str(manifest["sample_rate"])
  other = sum(n for r, n in rates.items() if r.isdigit() and r != target)
  unknown = rates.get("unknown", 0)
  said = []
  if other:
    known = ", ".join(f"{r} Hz x {n}" for r, n in rates.items() if r.isdigit())
    said.append(f"resampled {other} of {sum(rates.values())} records to {target} Hz (source "
                f"rates: {known})")
  if unknown:
    said.append(f"source rate unknown for {unknown} records (shards kept from an older prepare)")
  return ["  " + "; ".join(said)] if said else []


def coverage(listing: DatasetListing, manifest: dict) -> dict:
  """Per split and class: segments listed by the source, found on disk, prepared (decoded)."""
  out = {}
  for split, cov in listing.coverage.items():
    prepared = manifest["splits"].get(split, {}).get("class_counts", [0] * len(listing.classes))
    classes = [{"id": c["id"], "name": c["name"], "listed": cov["listed"][i],
                "found": cov["found"][i], "prepared": prepared[i],
                "missing": cov["listed"][i] - prepared[i]}
               for i, c in enumerate(listing.classes) if cov["listed"][i]]
    out[split] = {"classes": classes}
  return out


def _format_coverage(coverage: dict, top: int = 5) -> list[str]:
  lines = ["  what you have (segments per class, prepared / listed):"]
  for split, cov in coverage.items():
    classes = cov["classes"]
    full = sum(c["prepared"] == c["listed"] for c in classes)
    none = [c for c in classes if c["prepared"] == 0]
    lines.append(f"    {split}: {len(classes)} classes listed, {full} complete, "
                 f"{len(none)} with nothing")
    worst = sorted(classes, key=lambda c: (c["prepared"] / c["listed"], c["name"]))[:top]
    lines += [f"      {c['name']}: {c['prepared']} / {c['listed']}" for c in worst
              if c["prepared"] < c["listed"]]
  return lines


def _reasons(counter: dict, top: int = 10) -> str:
  return "".join(f"\n    {n} x {r}" for r, n in
                 sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:top])


def summary(manifest: dict, out_dir: Path) -> str:
  lines = [f"prepared {manifest['dataset']!r} in {out_dir}:"]
  for split, s in manifest["splits"].items():
    lines.append(f"  {split}: {s['num_records']} records, {s['total_seconds'] / 3600:.2f} h, "
                 f"{len(s['shards'])} shards")
  c, reasons = manifest["counts"], manifest["reasons"]
  lines.append(f"  skipped {c['skipped']} files (skipped.jsonl)" + _reasons(reasons["skipped"]))
  if c["notes"]:
    lines.append(f"  kept with notes: {c['notes']} files (notes.jsonl)" + _reasons(reasons["notes"]))
  lines.append(f"  rows {c['rows']} = {c['records']} records + {c['skipped']} skipped + "
               f"{c['dropped']} dropped from the listing")
  lines += _format_rates(manifest)
  if "coverage" in manifest:
    lines += _format_coverage(manifest["coverage"])
  if c["dropped"] or c["kept_with_problems"]:
    lines.append(f"  listing problems (problems.jsonl): {c['dropped']} rows dropped"
                 + _reasons(reasons["dropped"]))
    if c["kept_with_problems"]:
      lines.append(f"  kept with problems: {c['kept_with_problems']}" + _reasons(reasons["kept"]))
  return "\n".join(lines)
