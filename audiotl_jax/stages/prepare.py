"""`audiotl prepare`: a dataset in its published layout -> ArrayRecord shards + manifest.json.

The reader (`data/readers/`, chosen by config key `reader`) lists the items; `data/shard_writer`
decodes, resamples and writes them in parallel, resuming from the shards already finished.
"""
import os
from pathlib import Path

from audiotl_jax import config as config_lib
from audiotl_jax.data import readers, shard_writer
from audiotl_jax.errors import UserError


def run(config, workdir) -> dict:
  workdir = Path(workdir)
  if not config.root:
    raise UserError("set config key 'root': the dataset's folder (or CSV file for reader csv)")
  root = Path(config.root)
  if not root.exists():
    raise UserError(f"config key 'root': {root} does not exist")
  takes_file = config.reader in readers.FILE_ROOTS
  if takes_file and root.is_dir():
    raise UserError(f"config key 'root': {root} is a directory; reader {config.reader!r} takes "
                    f"{readers.FILE_ROOTS[config.reader]}")
  if not takes_file and not root.is_dir():
    raise UserError(f"config key 'root': {root} is a file; reader {config.reader!r} takes the "
                    "dataset's folder")
  config_lib.write(config, workdir, "prepare_config.json")
  listing = readers.get_reader(config.reader)(root,
                                              **config_lib.to_dict(config.options))
  return shard_writer.prepare(listing, workdir, sample_rate=config.sample_rate,
                              clip_seconds=config.clip_seconds, shard_size=config.shard_size,
                              num_workers=config.num_workers or os.cpu_count(),
                              progress=config.progress)
