"""The accounting of a prepared dataset: every source row, and "what you have" per class.

`counts`: rows = records + skipped files + dropped rows. `coverage` (AudioSet): per split and
class, the segments the CSV lists, found on disk, and prepared. `summary` is what prepare prints.
"""
import collections
from pathlib import Path

from audiotl_jax.data.readers.common import DatasetListing


def counts(manifest: dict, num_items: int) -> dict:
  """Every source row, accounted for: rows = records + skipped + dropped (listing problems)."""
  dropped = len({(p["split"], p["id"], p["path"], p.get("row"))
                 for p in manifest["problems"] if p["dropped"]})
  records_ = sum(s["num_records"] for s in manifest["splits"].values())
  return {"rows": num_items + dropped, "records": records_, "skipped": len(manifest["skipped"]),
          "dropped": dropped, "kept_with_problems": sum(
              not p["dropped"] for p in manifest["problems"])}


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


def summary(manifest: dict, out_dir: Path) -> str:
  lines = [f"prepared {manifest['dataset']!r} in {out_dir}:"]
  for split, s in manifest["splits"].items():
    lines.append(f"  {split}: {s['num_records']} records, {s['total_seconds'] / 3600:.2f} h, "
                 f"{len(s['shards'])} shards")
  reasons = collections.Counter(s["reason"].split(":")[0] for s in manifest["skipped"])
  lines.append(f"  skipped {len(manifest['skipped'])} files" +
               "".join(f"\n    {n} x {r}" for r, n in reasons.most_common()))
  if manifest["notes"]:
    lines.append(f"  kept with notes: {len(manifest['notes'])} files (e.g. "
                 f"{manifest['notes'][0]['id']}: {manifest['notes'][0]['note']})")
  c = manifest["counts"]
  lines.append(f"  rows {c['rows']} = {c['records']} records + {c['skipped']} skipped + "
               f"{c['dropped']} dropped from the listing")
  if "coverage" in manifest:
    lines += _format_coverage(manifest["coverage"])
  if manifest["problems"]:
    reasons = collections.Counter(p["reason"] for p in manifest["problems"])
    lines.append(f"  listing problems: {len(manifest['problems'])}" +
                 "".join(f"\n    {n} x {r}" for r, n in reasons.most_common(10)))
  return "\n".join(lines)
