"""Config files: `configs/x.py:arg` strings, `--config.a.b=value` overrides, locked configs.

A config file is a Python module with `get_config(arg=None) -> ml_collections.ConfigDict`. The
`arg` after the colon picks a variant (`configs/pretrain.py:subset=Animal,runlocal`); `parse_arg`
turns it into a ConfigDict of typed values. Overrides are applied to the loaded config and must
name an existing key: the config is locked, so a typo fails with its name and the closest keys.

Config files are data: they import `audiotl_jax.config` and nothing else of the package (the
defaults they need from the code, reader options and PETL settings, come through the helpers at
the end of this module), so the package can change inside without breaking anyone's configs.

Why not `ml_collections.config_flags`: it binds to absl's global FLAGS and loads lazily, so a
subcommand CLI gets late, unhelpful errors. This module is the small part of it we need.
"""
import ast
import difflib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import ml_collections

from audiotl_jax import fileio, resources
from audiotl_jax.errors import UserError

CONFIGS_DIR = resources.path("configs")


def parse_arg(arg: str | None, *, lazy: bool = False, **spec) -> ml_collections.ConfigDict:
  """Parses `"a=1,b=x,runlocal"` into a ConfigDict typed by the defaults in `spec`.

  A bare name (`runlocal`) sets a boolean to True. Keys not in `spec` are an error unless `lazy`.
  """
  out = ml_collections.ConfigDict(spec)
  if not arg:
    return out
  # A dict in `spec` is a group of arguments given as `group.name=value` (a study's
  # `data.audioset=/path`).
  known = sorted(k for k, v in spec.items() if not isinstance(v, dict)) + sorted(
      f"{k}.{n}" for k, v in spec.items() if isinstance(v, dict) for n in v)
  for part in arg.split(","):
    if not part:
      continue
    key, eq, value = part.partition("=")
    group, dot, name = key.partition(".")
    node, leaf = (out[group], name) if dot and isinstance(spec.get(group), dict) else (out, key)
    if key not in known and not lazy:
      raise UserError(f"config argument {key!r} is not known; known: {', '.join(known)}")
    if not eq:
      node[leaf] = True
    else:
      default = node.get(leaf)
      node[leaf] = _coerce(value, default, where=f"config argument {key!r}")
  return out


def _coerce(text: str, default: Any, *, where: str) -> Any:
  """Turns override text into the type of the value it replaces."""
  if isinstance(default, bool):
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
      return True
    if low in ("0", "false", "no", "off"):
      return False
    raise UserError(f"{where}: expected a boolean, got {text!r}")
  if isinstance(default, int):
    try:
      return int(text)
    except ValueError:
      raise UserError(f"{where}: expected an integer, got {text!r}") from None
  if isinstance(default, float):
    try:
      return float(text)
    except ValueError:
      raise UserError(f"{where}: expected a number, got {text!r}") from None
  if isinstance(default, (tuple, list)) or default is None:
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text  # A plain string is the only other sensible reading.
    if isinstance(default, (tuple, list)) and not isinstance(value, (tuple, list)):
      value = (value,)
    return tuple(value) if isinstance(default, tuple) else value
  return text


def resolve_path(spec: str) -> tuple[Path, str | None]:
  """`configs/pretrain.py:arg` -> (path, arg).

  A path that does not exist from the working directory is looked up in the bundled configs,
  with or without its leading `configs/` and `.py`: the README's commands work from anywhere.
  """
  path_str, _, arg = spec.partition(":")
  path = Path(path_str)
  if not path.exists() and not path.is_absolute():
    inner = path_str[len("configs/"):] if path_str.startswith("configs/") else path_str
    for candidate in (CONFIGS_DIR / inner, CONFIGS_DIR / f"{inner}.py"):
      if candidate.exists():
        path = candidate
        break
  if not path.exists():
    raise UserError(f"config file {path_str!r} does not exist (looked in . and {CONFIGS_DIR})")
  return path, (arg or None)


def load(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """Loads `file.py[:arg]`, applies `a.b=value` overrides and returns the locked config."""
  path, arg = resolve_path(spec)
  _register_configs_package(path)
  module_spec = importlib.util.spec_from_file_location(f"_audiotl_config_{path.stem}", path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except UserError:
    raise
  except Exception as e:
    raise UserError(f"config file {path} failed to load: {type(e).__name__}: {e}") from e
  if not hasattr(module, "get_config"):
    raise UserError(f"config file {path} has no get_config(arg) function")
  config = module.get_config(arg) if arg is not None else module.get_config()
  config.lock()
  apply_overrides(config, overrides)
  return config


def _register_configs_package(path: Path) -> None:
  """Makes `from configs import common` work in config files, from any working directory.

  The folder holding the file (or its parent, for `configs/sweeps/x.py`) is registered as the
  package `configs` when it has an `__init__.py`; nothing is added to sys.path.
  """
  for folder in (path.resolve().parent, path.resolve().parent.parent):
    init = folder / "__init__.py"
    if folder.name == "configs" and init.exists():
      loaded = sys.modules.get("configs")
      if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() == init:
        return
      spec = importlib.util.spec_from_file_location("configs", init,
                                                    submodule_search_locations=[str(folder)])
      module = importlib.util.module_from_spec(spec)
      sys.modules["configs"] = module
      for name in [m for m in sys.modules if m.startswith("configs.")]:
        del sys.modules[name]  # submodules of another configs folder
      spec.loader.exec_module(module)
      return


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
  for item in overrides:
    key, eq, text = item.partition("=")
    if not eq:
      raise UserError(f"override {item!r} must look like --config.{key}=VALUE")
    parent, leaf = _walk(config, key)
    default = parent[leaf]
    value = _coerce(text, default, where=f"--config.{key}")
    try:
      with config.unlocked():
        parent[leaf] = value
    except (TypeError, ValueError) as e:  # ml_collections' type check, said without its traceback
      raise UserError(f"--config.{key}: cannot set {text!r} where the config has "
                      f"{type(default).__name__} {default!r} ({e})") from None


def _walk(config, dotted: str):
  node = config
  parts = dotted.split(".")
  for i, part in enumerate(parts):
    keys = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
    if part not in keys:
      prefix = ".".join(parts[:i])
      close = difflib.get_close_matches(part, keys, n=3)
      hint = f"; did you mean {', '.join(repr(f'{prefix}.{c}'.lstrip('.')) for c in close)}?" if close else ""
      where = f"under {prefix!r}" if prefix else "at the top level"
      raise UserError(f"config key {dotted!r} does not exist ({part!r} not found {where}){hint}")
    if i == len(parts) - 1:
      return node, part
    node = node[part]


def changed_keys(old: dict, new: dict, *, ignore=()) -> list[str]:
  """Dotted keys whose values differ between two config dicts (added and removed keys too).

  `ignore` holds dotted keys (or prefixes) whose changes do not matter to the caller.
  """
  out = []

  def walk(a, b, prefix):
    for key in sorted(set(a) | set(b)):
      dotted = f"{prefix}{key}"
      if any(dotted == i or dotted.startswith(i + ".") for i in ignore):
        continue
      x, y = a.get(key, _MISSING), b.get(key, _MISSING)
      if isinstance(x, dict) and isinstance(y, dict):
        walk(x, y, dotted + ".")
      elif x != y:
        out.append(dotted)

  walk(old, new, "")
  return out


_MISSING = object()


def to_dict(config) -> dict:
  return json.loads(config.to_json_best_effort())


def write(config, workdir: Path, name: str = "config.json") -> Path:
  """Writes the resolved config into the workdir: the record of what ran."""
  workdir = fileio.path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  return fileio.write_json(workdir / name, to_dict(config), indent=2, sort_keys=True)


# ------------------------------------------------------------------ defaults for config files
# Config files call these instead of importing the modules that own the defaults.

def reader_options(reader: str) -> ml_collections.ConfigDict:
  """The options of a dataset reader with their defaults (`configs/prepare.py`'s `options`)."""
  from audiotl_jax.data import readers  # pylint: disable=g-import-not-at-top
  return readers.default_options(reader)


def petl_defaults() -> dict:
  """The parameter-efficient strategies' settings with their defaults (config block `petl`)."""
  from audiotl_jax.models import transfer  # pylint: disable=g-import-not-at-top
  return dict(transfer.DEFAULTS)


def finished_runs(pattern: str) -> tuple[str, ...]:
  """Run folders matching `pattern` that hold a finished run (`results.json`), sorted."""
  from audiotl_jax.launch import sweep  # pylint: disable=g-import-not-at-top
  return sweep.finished(pattern)
