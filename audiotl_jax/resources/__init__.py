"""Files that ship with the package: the stage configs and the AudioSet ontology and label lists.

In the source tree they live at the top level (`configs/`, `third_party/audioset/`), where users
read and copy them; the build maps them into this package (`setup.py`), so an installed
audiotl finds them through the import system, from any working directory, editable or not.
"""
import importlib.util
from pathlib import Path

_PACKAGES = {"configs": "audiotl_jax.resources.configs",
             "audioset": "audiotl_jax.resources.audioset"}


def path(name: str) -> Path:
  """The folder of a bundled resource: `configs` or `audioset`."""
  spec = importlib.util.find_spec(_PACKAGES[name])
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(f"audiotl's bundled {name!r} folder is missing: reinstall audiotl-jax")
  return Path(list(spec.submodule_search_locations)[0])
