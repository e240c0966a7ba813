"""The package's shape: who may import whom, module sizes, configs as data, a real install."""
import ast
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "audiotl_jax"

# Top-level part of the package -> the parts it may import (besides itself and the leaves every
# part may use: `errors`, `resources` and `fileio`). `stages` may import everything but `cli`;
# nothing but `cli` and `stages` imports `stages`. docs/ARCHITECTURE.md draws the same graph.
ALLOWED = {
    # The loader itself needs nothing; its helpers for config files (reader options, PETL
    # defaults, finished runs) import, at call time, the parts that own those defaults.
    "config": {"data", "models", "launch"},
    "data": set(),
    "features": set(),
    "models": {"features"},
    "train": {"config", "data", "features", "models"},
    "scores": {"train"},            # streaming scores shard their chunks over train.mesh
    "analysis": {"scores"},
    "launch": {"config"},  # plans read the runs' marker files: no JAX in a launcher
    "bench": {"config", "data", "features", "models", "train", "scores", "api"},
    "stages": {"config", "data", "features", "models", "train", "scores", "analysis", "launch",
               "bench"},
    "cli": {"config", "stages", "train"},   # train.mesh: jax.distributed set-up
    # Public facades kept for users' notebooks: thin re-exports.
    "frontend": {"features"},
    "transferability": {"scores"},
    # The Python API (a checkpoint as a function) and the HEAR 2021 API on top of it.
    "api": {"data", "features", "models", "train"},
    "hear": {"api"},
}
LEAVES = {"errors", "resources", "fileio"}


def _part(module: str) -> str | None:
  parts = module.split(".")
  return parts[1] if parts[0] == "audiotl_jax" and len(parts) > 1 else None


def _imports(path: Path):
  tree = ast.parse(path.read_text())
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      if node.module == "audiotl_jax":
        yield from (f"audiotl_jax.{a.name}" for a in node.names)
      else:
        yield node.module
    elif isinstance(node, ast.Import):
      yield from (a.name for a in node.names)


def _modules():
  return sorted(p for p in PACKAGE.rglob("*.py") if "resources" not in p.parts)


def test_every_import_follows_the_layer_rules():
  broken = []
  for path in _modules():
    rel = path.relative_to(PACKAGE)
    own = rel.parts[0].removesuffix(".py")
    if own in ("__init__", "__main__") or own in LEAVES:
      continue
    assert own in ALLOWED, f"{rel}: a new top-level part; add it to ALLOWED and ARCHITECTURE.md"
    for module in _imports(path):
      target = _part(module)
      if target is None or target == own or target in LEAVES:
        continue
      if target not in ALLOWED[own]:
        broken.append(f"{rel} imports {module}")
  assert not broken, "imports across the layer rules:\n" + "\n".join(broken)


def test_nothing_outside_cli_and_stages_imports_stages():
  for path in _modules():
    rel = path.relative_to(PACKAGE)
    if rel.parts[0] in ("stages", "cli.py"):
      continue
    assert not any(_part(m) == "stages" for m in _imports(path)), rel


def test_configs_are_data():
  """Config files import ml_collections, audiotl_jax.config and each other, nothing else."""
  for path in (REPO / "configs").rglob("*.py"):
    for module in _imports(path):
      assert module in ("ml_collections", "audiotl_jax.config") or module.startswith(
          "configs"), f"{path.relative_to(REPO)} imports {module}"


def test_module_sizes():
  sizes = {p.relative_to(PACKAGE): len(p.read_text().splitlines()) for p in _modules()}
  too_long = {str(p): n for p, n in sizes.items() if n > 400}
  assert not too_long, f"modules over 400 lines: {too_long}"
  assert statistics.median(sizes.values()) <= 200


def test_public_names_stay_importable():
  from audiotl_jax import frontend, transferability
  from audiotl_jax.transferability import evidence, streaming  # noqa: F401
  assert callable(frontend.log_mel) and callable(transferability.logme)
  assert transferability.streaming is streaming


def test_config_paths_work_from_any_directory(tmp_path):
  """The README's `--config configs/<stage>.py:arg` form, run outside the checkout."""
  code = ("from audiotl_jax import config; "
          "c = config.load('configs/finetune.py:strategy=full'); "
          "s = config.load('configs/sweeps/transfer.py'); print(c.strategy, s.stage)")
  out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                       text=True, check=True)
  assert out.stdout.split() == ["full", "finetune"]


@pytest.mark.slow
def test_non_editable_install_runs_the_demo_from_elsewhere(tmp_path):
  """`pip install .` into a fresh venv, then the demo at test scale from another directory."""
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
  # The dependencies come from this environment's site-packages (a path line, so its editable
  # finder for audiotl_jax is not activated); audiotl_jax itself only from the install.
  import site  # pylint: disable=g-import-not-at-top
  site_dir = next(Path(p) for p in site.getsitepackages() if p.endswith("site-packages"))
  new_site = next((venv / "lib").glob("python*/site-packages"))
  (new_site / "deps.pth").write_text(str(site_dir) + "\n")
  pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps", str(REPO)]
  subprocess.run(pip, check=True, cwd=tmp_path)
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  probe = subprocess.run([str(venv / "bin" / "python"), "-c",
                          "import audiotl_jax; print(audiotl_jax.__file__)"],
                         cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
  assert str(venv) in probe.stdout, probe.stdout  # the installed copy, not the checkout
  out = subprocess.run([str(venv / "bin" / "audiotl"), "demo", "--config",
                        "configs/demo.py:scale=test", "--workdir", "run",
                        "--config.progress=false"],
                       cwd=elsewhere, env=env, capture_output=True, text=True, timeout=1500)
  assert out.returncode == 0, out.stderr[-3000:]
  assert (elsewhere / "run" / "report.md").exists()
