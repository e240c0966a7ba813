r"""Raw audio + label lists -> ArrayRecord shards + manifest.json.

  audiotl prepare --config configs/prepare.py:reader=audioset \
      --config.root=/data/audioset --workdir data/audioset_prepared
  audiotl prepare --config configs/prepare.py:reader=speech_commands \
      --config.root=/data/speech_commands_v0.02 --workdir data/speech_commands_prepared

reader: one of audioset, speech_commands, dcase2018_task1, csv (`root` is then the CSV file).
Re-running on the same workdir resumes: finished shards are kept.
"""
import ml_collections

from audiotl_jax.config import parse_arg


def get_config(arg=None):
  arg = parse_arg(arg, reader="audioset")
  clip = {"audioset": 10.0, "speech_commands": 1.0, "dcase2018_task1": 10.0}.get(arg.reader)
  return ml_collections.ConfigDict(dict(
      reader=arg.reader, root="", sample_rate=16000,
      clip_seconds=clip,       # pad/crop every clip to this length; None keeps each length
      shard_size=1024, num_workers=0,  # 0: every core
      progress=True))
