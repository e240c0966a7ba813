"""GTZAN genre collection (Tzanetakis & Cook 2002): `genres/<genre>/<genre>.<NNNNN>.<ext>`.

1000 clips of 30 s, 100 per genre (blues classical country disco hiphop jazz metal pop reggae
rock); the original archive has `.au` files, the Kaggle copy `.wav` files in `genres_original/`
(its `jazz.00054.wav` does not decode: prepare skips it as unreadable). The label is the genre
folder.

GTZAN has no official split. This reader carves a seeded random one, stratified by genre
(`validation_fraction`, `test_fraction` of each genre's clips). GTZAN repeats artists, and
random splits put an artist on both sides, which flatters results; the commonly used
fault-filtered, artist-disjoint split (Kereliuk, Sturm & Larsen 2015) is not shipped here.
"""
import os
import re
from pathlib import Path

from audiotl_jax.data.readers.common import (AUDIO_EXTENSIONS, DatasetListing, Item, carve,
                                             problem, require_dir)
from audiotl_jax.errors import UserError

GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae",
          "rock")
EXTENSIONS = AUDIO_EXTENSIONS + ("au",)  # the original archive's format; libsndfile reads it
# Where the genre folders may be, below the root given: the archive's, the Kaggle copy's (also
# inside its Data/ folder), or the root itself.
_GENRE_ROOTS = ("genres", "genres_original", "Data/genres_original", ".")


def _genres_folder(root: Path) -> Path:
  for sub in _GENRE_ROOTS:
    folder = root / sub
    if folder.is_dir() and any(e.is_dir() and e.name in GENRES for e in os.scandir(folder)):
      return folder
  raise UserError(f"GTZAN root {root}: no genre folders ({', '.join(GENRES)}) in it or in its "
                  f"{', '.join(s + '/' for s in _GENRE_ROOTS[:-1])} folder")


def gtzan(root, *, validation_fraction: float = 0.1, test_fraction: float = 0.1,
          seed: int = 0) -> DatasetListing:
  """GTZAN under `root` (the dataset folder, or its genres folder), split by a seeded carve.

  Every non-hidden folder beside the genre folders is a genre too (a user's extra class). Files
  that are not `<genre>.<number>.<ext>` of their folder's genre, or not audio by extension, are
  problems and left out; so is an empty genre folder (its genre is then not a class). Ids are
  the track names (`blues.00012`), the names the GTZAN literature uses.
  """
  root = require_dir(Path(root), "GTZAN root")
  folder = _genres_folder(root)
  rows, problems, seen = [], [], {}
  for genre in sorted(e.name for e in os.scandir(folder)
                      if e.is_dir() and not e.name.startswith(".")):
    pattern = re.compile(rf"({re.escape(genre)}\.\d+)\.({'|'.join(EXTENSIONS)})", re.IGNORECASE)
    found = 0
    for entry in sorted(os.scandir(folder / genre), key=lambda e: e.name):
      if entry.name.startswith("."):  # .DS_Store, macOS ._ copies: not the dataset's
        continue
      path = Path(entry.path)
      match = pattern.fullmatch(entry.name)
      if entry.is_dir():
        problems.append(problem(None, entry.name, path, "a folder inside a genre folder"))
      elif entry.name.rpartition(".")[2].lower() not in EXTENSIONS:
        problems.append(problem(None, entry.name, path, "not an audio file (by its extension)"))
      elif not match:
        problems.append(problem(None, entry.name, path,
                                f"name is not {genre}.<number>.<ext>"))
      elif match[1].lower() in seen:
        problems.append(problem(None, match[1], path,
                                f"duplicate id (also {seen[match[1].lower()].name})"))
      else:
        seen[match[1].lower()] = path
        rows.append((match[1], path, genre))
        found += 1
    if not found:
      problems.append(problem(None, genre, folder / genre,
                              "no audio files in this genre folder; the genre is not a class"))
  for entry in sorted(os.scandir(folder), key=lambda e: e.name):
    if entry.is_file() and entry.name.rpartition(".")[2].lower() in EXTENSIONS:
      problems.append(problem(None, entry.name, Path(entry.path), "audio outside a genre folder"))
  if not rows:
    raise UserError(f"GTZAN root {root}: no audio files in the genre folders of {folder}")
  splits = carve([r[2] for r in rows], list(range(len(rows))),
                 {"validation": validation_fraction, "test": test_fraction}, seed)
  items = [Item(id_, path, (genre,), split) for (id_, path, genre), split in zip(rows, splits)]
  classes = sorted({r[2] for r in rows})
  return DatasetListing(
      "gtzan", "multiclass", [{"id": g, "name": g} for g in classes], items, problems,
      {"reader": "gtzan", "root": str(root), "genres_folder": str(folder),
       "validation_fraction": validation_fraction, "test_fraction": test_fraction, "seed": seed})
