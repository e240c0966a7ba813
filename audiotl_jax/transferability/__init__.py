"""The transferability scores under their old name: `audiotl_jax.scores` is the package now.

Users' notebooks import `audiotl_jax.transferability` (`transferability.logme(...)`,
`from audiotl_jax.transferability import streaming`); both keep working and give the very same
objects as `audiotl_jax.scores`.
"""
import importlib
import pkgutil
import sys

from audiotl_jax import scores as _scores
from audiotl_jax.scores import *  # noqa: F401,F403  (the public names, as scores exports them)

for _info in pkgutil.iter_modules(_scores.__path__):
  _module = importlib.import_module(f"audiotl_jax.scores.{_info.name}")
  sys.modules[f"{__name__}.{_info.name}"] = _module
  globals()[_info.name] = _module
del _info, _module
