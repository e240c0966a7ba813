r"""Raw audio + label lists -> ArrayRecord shards + manifest.json.

  audiotl prepare --config configs/prepare.py:reader=audioset \
      --config.root=/data/audioset --workdir data/audioset_prepared
  audiotl prepare --config configs/prepare.py:reader=speech_commands \
      --config.root=/data/speech_commands_v0.02 --workdir data/speech_commands_prepared

reader: one of audioset, speech_commands, tfds_speech_commands (`root` is a TFDS data_dir holding
the prepared dataset), dcase2018_task1, dcase2020_task1a, dcase2018_task3,
esc50, csv (`root` is then the CSV file), folders (one folder per class). `options` holds the
reader's own options with their defaults, e.g. `--config.options.fold=3` (esc50: the test fold),
`--config.options.task=12` (speech_commands: 10 words + unknown + silence),
`--config.options.test_set=warblrb10k` (dcase2018_task3), `--config.options.validation=test` (the
legacy protocol that selects on the test split: explicit, and noted in the manifest). See
audiotl_jax/data/readers/ for each reader's options.
Re-running on the same workdir resumes: finished shards are kept.
"""
import ml_collections

from audiotl_jax import config as config_lib
from audiotl_jax.config import parse_arg


def get_config(arg=None):
  arg = parse_arg(arg, reader="audioset")
  clip = {"audioset": 10.0, "speech_commands": 1.0, "dcase2018_task1": 10.0,
          "dcase2020_task1a": 10.0, "dcase2018_task3": 10.0, "esc50": 5.0,
          "tfds_speech_commands": 1.0}.get(arg.reader)
  return ml_collections.ConfigDict(dict(
      reader=arg.reader, root="", options=config_lib.reader_options(arg.reader),
      sample_rate=16000,
      clip_seconds=clip,       # pad/crop every clip to this length; None keeps each length
      shard_size=1024, num_workers=0,  # 0: every core
      label="",                # a name for the dataset in a study's run folders; changes nothing
      progress=True))
