"""`audiotl prepare`: a dataset in its published layout -> ArrayRecord shards + manifest.json.

The reader (`data/readers/`, chosen by config key `reader`) lists the items; `data/shard_writer`
decodes, resamples and writes them in parallel, resuming from the shards already finished.
"""
import json
import os
import time
from pathlib import Path

import jax

from audiotl_jax import config as config_lib, fileio
from audiotl_jax.data import readers, shard_writer
from audiotl_jax.errors import UserError


def run(config, workdir) -> dict:
  # ArrayRecordWriter, the SQLite index of the files and the spilled logs write local files.
  workdir = fileio.local_only(workdir, "`audiotl prepare` writes a local folder: prepare into "
                              "one, copy it there (gsutil -m cp -r), and train with "
                              "--config.data.dir=gs://...")
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
  if jax.process_index() != 0:
    return _wait_for_manifest(workdir)
  config_lib.write(config, workdir, "prepare_config.json")
  listing = readers.get_reader(config.reader)(root,
                                              **config_lib.to_dict(config.options))
  return shard_writer.prepare(listing, workdir, sample_rate=config.sample_rate,
                              clip_seconds=config.clip_seconds, shard_size=config.shard_size,
                              num_workers=config.num_workers or os.cpu_count(),
                              progress=config.progress)


def _wait_for_manifest(workdir: Path, poll_seconds: float = 10.0) -> dict:
  """Other processes of a multi-host job: process 0 prepares (one writer of a shared folder);
  they wait for its manifest, polling the shared filesystem rather than holding a collective
  open for the hours a large prepare takes. A launcher stops them if process 0 fails."""
  manifest = workdir / "manifest.json"
  print(f"prepare: process {jax.process_index()} waits for process 0 to write {manifest}")
  while not manifest.exists():
    time.sleep(poll_seconds)
  return json.loads(manifest.read_text())
