"""TFDS `speech_commands` (the 12-class task) through `tfds.data_source`, when the `tfds` extra
is installed and the dataset is already prepared in ArrayRecord form under `data_dir`
(`tfds build speech_commands --file_format=array_record --data_dir=...`). Nothing is downloaded:
a data_dir without the prepared dataset is an error that says how to build it.

Items point into the data source (`tfds:{name}:{split}:{index}:{data_dir}`); prepare reads them
like files. Listing reads each example's label, so it touches every record once.
"""
from pathlib import Path

from audiotl_jax.data.decode import TFDS_PREFIX
from audiotl_jax.data.readers.common import DatasetListing, Item, require_dir
from audiotl_jax.errors import UserError


def tfds_speech_commands(data_dir, *, name: str = "speech_commands") -> DatasetListing:
  """Every split TFDS has for `name` (train, validation, test), with TFDS's class order."""
  data_dir = require_dir(Path(data_dir), "TFDS data_dir")
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError("reader tfds_speech_commands needs the tfds extra: pip install "
                    "'audiotl-jax[tfds]'") from None
  builder = tfds.builder(name, data_dir=str(data_dir))
  if not builder.is_prepared():
    raise UserError(f"TFDS dataset {name!r} is not prepared under {data_dir}; build it once with "
                    f"`tfds build {name} --file_format=array_record --data_dir={data_dir}`")
  names = builder.info.features["label"].names
  items = []
  for split in builder.info.splits:
    source = tfds.data_source(name, split=split, data_dir=str(data_dir), download=False)
    for i in range(len(source)):
      label = names[int(source[i]["label"])]
      items.append(Item(f"{split}/{i}", Path(f"{TFDS_PREFIX}{name}:{split}:{i}:{data_dir}"),
                        (label,), split))
  return DatasetListing(f"tfds_{name}", "multiclass", [{"id": n, "name": n} for n in names],
                        items, [], {"reader": "tfds_speech_commands", "root": str(data_dir),
                                    "name": name})
