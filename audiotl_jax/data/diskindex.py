"""A string-keyed index in a temporary SQLite file, for bookkeeping that grows with the dataset.

Listing AudioSet means matching ~2M CSV rows against ~2M files on disk and catching duplicate
ids. Held in Python dicts and sets that costs a few hundred bytes per row (about 1 GB at full
scale); here it costs disk pages and a bounded page cache, so `prepare`'s memory does not grow
with the number of clips. A lookup is a B-tree probe (a few microseconds); the file is removed on
`close()` or when the index is garbage-collected.
"""
import os
import sqlite3
import tempfile


class DiskIndex:
  """`key -> value` (str -> str | None) with first-writer-wins insertion, like `dict.setdefault`."""

  def __init__(self, dir=None):  # pylint: disable=redefined-builtin
    self._tmp = tempfile.TemporaryDirectory(prefix="audiotl-index-", dir=dir)
    self._db = sqlite3.connect(os.path.join(self._tmp.name, "index.sqlite"))
    # A scratch file: no journal and no fsync; a crash just loses it and the next run rebuilds it.
    self._db.execute("PRAGMA journal_mode=OFF")
    self._db.execute("PRAGMA synchronous=OFF")
    self._db.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID")

  def add(self, key: str, value: str | None = None) -> bool:
    """Inserts `key` unless present; True when it was new (so a set's "seen before?" is one call)."""
    return self._db.execute("INSERT OR IGNORE INTO kv VALUES (?, ?)", (key, value)).rowcount == 1

  def add_many(self, pairs, *, keep: str = "first") -> None:
    """`add` for an iterable of (key, value) pairs, in one statement (bulk loads are ~10x faster).

    `keep="smallest"`: of several values for a key, the smallest wins, whatever order they came
    in (a deterministic choice without sorting the input first)."""
    if keep == "first":
      self._db.executemany("INSERT OR IGNORE INTO kv VALUES (?, ?)", pairs)
    elif keep == "smallest":
      self._db.executemany("INSERT INTO kv VALUES (?, ?) ON CONFLICT(k) DO UPDATE "
                           "SET v = min(v, excluded.v)", pairs)
    else:
      raise ValueError(f"keep must be 'first' or 'smallest', got {keep!r}")

  def get(self, key: str, default=None):
    row = self._db.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
    return default if row is None else row[0]

  def __contains__(self, key: str) -> bool:
    return self._db.execute("SELECT 1 FROM kv WHERE k = ?", (key,)).fetchone() is not None

  def __len__(self) -> int:
    return self._db.execute("SELECT COUNT(*) FROM kv").fetchone()[0]

  def close(self) -> None:
    if self._db is not None:
      self._db.close()
      self._db = None
      self._tmp.cleanup()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
