"""Dataset readers: a dataset's published layout -> a `DatasetListing` of labelled audio files.

One module per dataset family; `READERS` names them for `audiotl prepare`
(`configs/prepare.py:reader=NAME`, reader options under `--config.options.KEY`). A reader only
lists (it never decodes audio; `prepare.py` does) and accounts for every row of its source: rows
it cannot use are `DatasetListing.problems`, with their reason (see `common.py`). A reader's
keyword options (`default_options`) are what the prepare config exposes.
"""
import inspect
from typing import Callable

from audiotl_jax.data.readers.audioset import audioset
from audiotl_jax.data.readers.common import AUDIO_EXTENSIONS, DatasetListing, Item
from audiotl_jax.data.readers.dcase import dcase2018_task1, dcase2018_task3, dcase2020_task1a
from audiotl_jax.data.readers.esc50 import esc50
from audiotl_jax.data.readers.generic import class_folders, csv_manifest
from audiotl_jax.data.readers.gtzan import gtzan
from audiotl_jax.data.readers.speech_commands import speech_commands
from audiotl_jax.data.readers.tfds import tfds_speech_commands
from audiotl_jax.errors import unknown_name

READERS: dict[str, Callable[..., DatasetListing]] = {
    "audioset": audioset,
    "speech_commands": speech_commands,
    "tfds_speech_commands": tfds_speech_commands,
    "dcase2018_task1": dcase2018_task1,
    "dcase2020_task1a": dcase2020_task1a,
    "dcase2018_task3": dcase2018_task3,
    "esc50": esc50,
    "gtzan": gtzan,
    "csv": csv_manifest,
    "folders": class_folders,
}

# Readers whose `root` is a file, and what file; every other reader's `root` is a folder.
FILE_ROOTS = {"csv": "a CSV file (path,label[,split])"}

__all__ = ["AUDIO_EXTENSIONS", "DatasetListing", "FILE_ROOTS", "Item", "READERS",
           "default_options", "get_reader"]


def get_reader(name: str) -> Callable[..., DatasetListing]:
  if name not in READERS:
    raise unknown_name("dataset reader", name, READERS)
  return READERS[name]


def default_options(name: str) -> dict:
  """The reader's keyword options with their defaults (those that have a plain value), for the
  prepare config: `--config.options.fold=2` then reaches `esc50(root, fold=2)`."""
  params = inspect.signature(get_reader(name)).parameters.values()
  return {p.name: p.default for p in list(params)[1:]
          if isinstance(p.default, (bool, int, float, str))}
