"""TFDS `speech_commands` (the 12-class task) through `tfds.data_source`, when the `tfds` extra
is installed and the dataset is already prepared in ArrayRecord form under `data_dir`
(`tfds build speech_commands --file_format=array_record --data_dir=...`; building needs the
extra's `pydub`). Nothing is downloaded: a data_dir without the prepared dataset, or with it only
in another file format (TFRecord has no random access), is an error that says how to build it.

Items point into the data source (`tfds:{name}:{version}:{split}:{index}:{data_dir}`, see
`decode.py`); prepare reads them like files. The version is pinned at listing time, so a newer
build in the same data_dir cannot shift the indices under prepare. TFDS splits keep their names
(train, validation, test) and their order on disk (shuffled by TFDS at build time); ids are
`{split}/{index}`. Listing reads each example's label, so it reads every record once: TFDS keeps
no label index, and the audio is stored as a plain int array, so skipping its "decoding" saves
nothing (about 0.4 ms per 1 s clip, nearly all of it reading the record).
"""
from pathlib import Path

from audiotl_jax.data.decode import TFDS_PREFIX
from audiotl_jax.data.readers.common import DatasetListing, Item, require_dir
from audiotl_jax.errors import UserError


def _build_command(name: str, data_dir) -> str:
  return f"`tfds build {name.split(':')[0]} --file_format=array_record --data_dir={data_dir}`"


def prepared_builder(tfds, name: str, data_dir):
  """The TFDS builder of `name` under `data_dir`, which must hold it already built."""
  builder = tfds.builder(name, data_dir=str(data_dir))
  if not builder.is_prepared():
    raise UserError(f"TFDS dataset {name!r} is not prepared under {data_dir}; build it once "
                    f"with {_build_command(name, data_dir)}")
  return builder


def random_access(builder, split: str, data_dir):
  """`split` of a prepared builder as a `tfds.data_source` (indexable, decoded examples)."""
  try:
    return builder.as_data_source(split=split)
  except NotImplementedError:
    # TFDS's message is about its API; this one names the directory and the way out.
    raise UserError(f"TFDS dataset {builder.name!r} under {data_dir} is stored as "
                    f"{builder.info.file_format.value}, which has no random access; rebuild it "
                    f"with {_build_command(builder.name, data_dir)} (into an empty data_dir, or "
                    "delete the old build first)") from None


def tfds_speech_commands(data_dir, *, name: str = "speech_commands") -> DatasetListing:
  """Every split TFDS has for `name` (train, validation, test), with TFDS's class order.

  `name` may carry a version (`speech_commands:0.0.3`); without one, the one this TFDS builds.
  """
  # Absolute: item paths are resolved again in prepare's workers.
  data_dir = require_dir(Path(data_dir), "TFDS data_dir").resolve()
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError("reader tfds_speech_commands needs the tfds extra: pip install "
                    "'audiotl-jax[tfds]'") from None
  builder = prepared_builder(tfds, name, data_dir)
  # The name with its version and config, as TFDS resolved it: `_tfds_example` reopens exactly it.
  config = builder.builder_config.name if builder.builder_config else None
  ref = f"{builder.name}{'/' + config if config else ''}:{builder.version}"
  names = builder.info.features["label"].names
  items = []
  for split in builder.info.splits:
    source = random_access(builder, split, data_dir)
    for i in range(len(source)):
      label = names[int(source[i]["label"])]
      items.append(Item(f"{split}/{i}", Path(f"{TFDS_PREFIX}{ref}:{split}:{i}:{data_dir}"),
                        (label,), split))
  return DatasetListing(f"tfds_{builder.name}", "multiclass",
                        [{"id": n, "name": n} for n in names], items, [],
                        {"reader": "tfds_speech_commands", "root": str(data_dir), "name": ref})
