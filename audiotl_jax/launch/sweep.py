r"""`audiotl sweep`: expand a sweep config into runs; run them, or write SLURM / TPU-VM launches.

  audiotl sweep --config configs/sweeps/scaling.py --workdir runs/scaling --launcher slurm

A sweep config (`configs/sweeps/*.py`, `get_config(arg)`) names a stage, its base config and the
axes to vary; every run is one ordinary `audiotl <stage>` command line, so a sweep never does
anything a user could not type:

  stage         pretrain | finetune | score | embed | prepare
  base          the stage's config, `file.py[:arg]`
  axes          ((key, (values...)), ...): the runs are their product, in this order; a key is
                an override (`data.fraction`) or, with a colon, the base config's argument
                (`:strategy`, which also sets what that argument implies, e.g. the lr)
  zip           ((key, key, ...), ...): axes in one group advance together (equal lengths)
  fixed         ((override key, value), ...): the same for every run
  name          workdir name template, e.g. "{subset}-{fraction}-s{seed}" (axis keys, full or
                last part); empty: "subset-Music__fraction-0.1__seed-0", from every axis
  max_parallel  SLURM array throttle (0: no limit)

Every key is checked against the base config (and every value against its type) before
anything runs. The sweep's workdir gets `sweep.json` (every run: name, command, workdir,
status), `runs.txt` (the commands still to run, one a line), `logs/` and one folder per run.
A run whose folder holds a finished run is `done` and skipped; a partial one is resumed, as every
stage resumes from its workdir. Launchers: `local` runs them one after another; `slurm` writes
`sweep.sbatch`, a job array (task i = line i+1 of runs.txt); `tpu_vm` writes `sweep_tpu.sh`, for
every worker of a slice; `print` prints the commands.
"""
import fnmatch
import itertools
import json
import re
import shlex
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from audiotl_jax import config as config_lib, fileio
from audiotl_jax.launch import launchers
from audiotl_jax.errors import UserError, unknown_name

LAUNCHERS = ("local", "slurm", "tpu_vm", "print")
STAGES = ("prepare", "pretrain", "finetune", "embed", "score", "probe")
FIELDS = ("stage", "base", "axes", "zip", "fixed", "name", "max_parallel")


@dataclass
class Run:
  name: str
  workdir: str
  args: list[str]                 # `audiotl` arguments: the stage first
  values: dict = field(default_factory=dict)  # axis key -> value, for reports
  status: str = "new"             # new | resume | done | excluded | finished | failed
  exit_code: int | None = None
  seconds: float | None = None
  log: str | None = None

  @property
  def command(self) -> str:
    return shlex.join(["audiotl", *self.args])


# ------------------------------------------------------------------ config helpers
def finished(pattern: str) -> tuple[str, ...]:
  """Workdirs matching a glob that hold a finished run: an axis chaining one sweep to the next,
  e.g. `("init", sweep.finished("runs/scaling/*"))` fine-tunes every finished pre-training."""
  return tuple(p for p in fileio.glob(pattern)
               if fileio.path(p).is_dir() and is_done("pretrain", p))


# The file each stage writes last, in its workdir. results.json is what
# `train.checkpoints.finished` reads; it is read here directly so that planning a sweep or a
# study never imports JAX. `embed` has no single marker: it resumes and skips its finished splits
# by itself. The synthetic generator's stamp says `complete` only once every file is written.
MARKERS = {"pretrain": "results.json", "finetune": "results.json", "score": "scores.json",
           "prepare": "manifest.json", "report": "report.md", "synthetic": ".synthetic.json",
           "probe": "results.json", "import": "results.json"}


def is_done(stage: str, workdir) -> bool:
  """Does `workdir` hold a finished run of `stage`?"""
  marker = MARKERS.get(stage)
  path = fileio.path(workdir) / marker if marker else None
  if path is None or not path.exists():
    return False
  if stage == "synthetic":
    try:
      return bool(json.loads(path.read_text()).get("complete"))
    except ValueError:  # written half-way
      return False
  return True


# ------------------------------------------------------------------ expansion
def load(spec: str, overrides=()):
  """Loads a sweep config and checks its own fields (a typo like `axis` must not pass)."""
  sweep = config_lib.load(spec, overrides)
  path, _ = config_lib.resolve_path(spec)
  unknown = sorted(set(sweep.keys()) - set(FIELDS))
  if unknown:
    raise UserError(f"sweep config {path}: unknown field(s) {', '.join(map(repr, unknown))}; "
                    f"known: {', '.join(FIELDS)}")
  for key in ("stage", "base", "axes"):
    if key not in sweep:
      raise UserError(f"sweep config {path}: field {key!r} is missing")
  if sweep.stage not in STAGES:
    raise unknown_name("sweep stage", sweep.stage, STAGES)
  return sweep


def _pairs(value, what: str) -> list[tuple[str, object]]:
  try:
    pairs = [(str(k), v) for k, v in value]
  except (TypeError, ValueError):
    raise UserError(f"sweep field {what!r} must be a sequence of (key, value) pairs") from None
  keys = [k for k, _ in pairs]
  if len(set(keys)) != len(keys):
    raise UserError(f"sweep field {what!r} names a key twice: {keys}")
  return pairs


def to_text(value) -> str:
  """A value as `--config.key=TEXT`, which config.py coerces back to the default's type."""
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, str):
    return value
  return repr(tuple(value)) if isinstance(value, list) else repr(value)


def _spec(base: str, args: dict) -> str:
  """The base `file.py[:arg]` with `:name` axes merged into its argument."""
  path, _, arg = base.partition(":")
  parts = {p.partition("=")[0]: p for p in arg.split(",") if p}
  for key, value in args.items():
    text = to_text(value)
    if "," in text:
      raise UserError(f"sweep key {key!r}: value {text!r} has a comma, which would end the config "
                      f"argument")
    parts[key[1:]] = f"{key[1:]}={text}"
  return f"{path}:{','.join(parts.values())}" if parts else path


def _split(values: dict) -> tuple[dict, list[str]]:
  """`:name` keys (the base config's argument) apart from `a.b` override keys."""
  args = {k: v for k, v in values.items() if k.startswith(":")}
  return args, [f"{k}={to_text(v)}" for k, v in values.items() if not k.startswith(":")]


def _check_keys(base: str, pairs, what: str) -> None:
  """Each key (with its first value) on the base config: misspellings fail here, by name."""
  for key, value in pairs:
    args, overrides = _split({key: value})
    try:
      config_lib.load(_spec(base, args), overrides)
    except UserError as e:
      raise UserError(f"sweep {what} key {key!r}: {e}") from None


def _groups(axes, zip_groups) -> list[list[str]]:
  """Axis keys grouped: a zip group is one axis, placed where its first key stands."""
  names = [k for k, _ in axes]
  grouped, seen = [], set()
  of = {}
  for group in zip_groups:
    group = [str(k) for k in group]
    for k in group:
      if k not in names:
        raise UserError(f"sweep zip names {k!r}, which is not an axis; axes: {', '.join(names)}")
      if k in of:
        raise UserError(f"sweep zip names {k!r} in two groups")
      of[k] = group
    lengths = {k: len(dict(axes)[k]) for k in group}
    if len(set(lengths.values())) > 1:
      raise UserError(f"sweep zip group {group}: axes of unequal lengths {lengths}")
  for k in names:
    if k not in seen:
      grouped.append(of.get(k, [k]))
      seen.update(grouped[-1])
  return grouped


def slug(value) -> str:
  text = to_text(value)
  if "/" in text:  # a path (a chained checkpoint): its folder name says which
    text = Path(text.rstrip("/")).name
  return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "_"


def _short_names(keys: list[str]) -> dict[str, str]:
  last = [k.rsplit(".", 1)[-1].lstrip(":") for k in keys]
  return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def _name(template: str, values: dict, short: dict) -> str:
  if not template:
    return "__".join(f"{short[k]}-{slug(v)}" for k, v in values.items())
  lookup = {**{short[k]: v for k, v in values.items()}, **values}

  def sub(m):
    if m.group(1) not in lookup:
      raise unknown_name("sweep name placeholder", m.group(1), lookup)
    return slug(lookup[m.group(1)])
  return re.sub(r"\{([\w.:]+)\}", sub, template)


def expand(sweep, workdir: Path) -> list[Run]:
  """The runs of a sweep, every override checked against the base config."""
  return expand_runs(sweep.stage, sweep.base, sweep.axes, workdir, fixed=sweep.get("fixed", ()),
                     zip_groups=sweep.get("zip", ()), name=sweep.get("name", ""))


def expand_runs(stage: str, base: str, axes, workdir: Path, *, fixed=(), zip_groups=(),
                name: str = "") -> list[Run]:
  """The runs of `stage` over `axes` (a sweep's, or one step of a study's, launch/study.py)."""
  axes = _pairs(axes, "axes")
  fixed = _pairs(fixed, "fixed")
  for key, values in axes:
    if isinstance(values, str) or not len(values):
      hint = " (a sweep.finished(...) glob that matched no finished run yet?)" if not values else ""
      raise UserError(f"sweep axis {key!r} needs a non-empty sequence of values{hint}")
  _check_keys(base, fixed, "fixed")
  _check_keys(base, [(k, vs[0]) for k, vs in axes], "axis")
  both = set(dict(fixed)) & set(dict(axes))
  if both:
    raise UserError(f"sweep key(s) {sorted(both)} are both an axis and fixed")
  groups = _groups(axes, zip_groups)
  table = dict(axes)
  short = _short_names(list(table))
  runs = []
  for combo in itertools.product(*[range(len(table[g[0]])) for g in groups]):
    values = {k: table[k][i] for g, i in zip(groups, combo) for k in g}
    values = {k: values[k] for k in table}  # axis order, not group order, for names
    run_name = _name(name, values, short)
    arg_values, overrides = _split({**dict(fixed), **values})
    spec = _spec(base, arg_values)
    config_lib.load(spec, overrides)  # every value's type, before anything runs
    run_dir = workdir / run_name
    args = [stage, "--config", spec, *(f"--config.{o}" for o in overrides),
            "--workdir", str(run_dir)]
    runs.append(Run(name=run_name, workdir=str(run_dir), args=args, values=values))
  names = [r.name for r in runs]
  dupes = sorted({n for n in names if names.count(n) > 1})
  if dupes:
    raise UserError(f"sweep runs share workdir name(s) {dupes[:3]}: put every axis in `name`")
  return runs


def plan(runs: list[Run], stage: str, only: str = "") -> None:
  """Marks each run done (skipped), resume (a partial workdir), new, or excluded by `only`."""
  pattern = f"*{only}*"  # anywhere in the name: people remember a part of it
  chosen = [r for r in runs if fnmatch.fnmatchcase(r.name, pattern)] if only else runs
  if not chosen:
    raise UserError(f"--only {only!r} matches no run; runs are named like {runs[0].name!r}")
  for run in runs:
    path = fileio.path(run.workdir)
    if path.is_dir() and is_done(stage, path):
      run.status = "done"
    elif run not in chosen:
      run.status = "excluded"
    elif path.is_dir() and any(path.iterdir()):
      run.status = "resume"
    else:
      run.status = "new"


def write_records(runs: list[Run], workdir: Path, spec: str) -> None:
  workdir.mkdir(parents=True, exist_ok=True)
  record = {"config": spec, "cwd": str(Path.cwd()),
            "runs": [dict(asdict(r), command=r.command) for r in runs]}
  fileio.write_text(workdir / "sweep.json", json.dumps(record, indent=2, default=str) + "\n")
  todo = [r.command for r in runs if r.status in ("new", "resume")]
  fileio.write_text(workdir / "runs.txt", "".join(c + "\n" for c in todo))


# ------------------------------------------------------------------ the command
def run(spec: str, workdir: Path, *, overrides=(), launcher: str = "local", dry_run: bool = False,
        only: str = "", executable=None) -> int:
  """`audiotl sweep`: plan, record, then launch with `launcher`. Returns the exit status.

  `executable`: what runs a stage locally, instead of `python -m audiotl_jax` (for tests)."""
  if launcher not in LAUNCHERS:
    raise unknown_name("launcher", launcher, LAUNCHERS)
  sweep = load(spec, overrides)
  workdir = fileio.path(workdir)
  if launcher != "print" and not dry_run:
    # The launchers write logs and scripts that a shell runs: the sweep's folder must be local
    # (planning and its records work on object storage: --launcher print or --dry_run).
    workdir = fileio.local_only(workdir, f"--launcher {launcher} writes logs and scripts "
                                "there: give the sweep a local --workdir")
  runs = expand(sweep, workdir)
  plan(runs, sweep.stage, only)
  write_records(runs, workdir, spec)
  todo = [r for r in runs if r.status in ("new", "resume")]
  count = {s: sum(r.status == s for r in runs) for s in ("new", "resume", "done", "excluded")}
  # `print` keeps stdout to the commands alone, so it can be piped (e.g. into GNU parallel).
  print(f"sweep: {len(runs)} runs: {count['new']} new, {count['resume']} to resume, "
        f"{count['done']} done (skipped), {count['excluded']} excluded; "
        f"{workdir / 'sweep.json'}, {workdir / 'runs.txt'}",
        file=sys.stderr if launcher == "print" else sys.stdout)
  if launcher == "print" or dry_run:
    for r in todo:
      print(r.command)
    return 0
  if not todo:
    print("sweep: nothing to run")
    return 0
  if launcher == "local":
    return launchers.run_local(runs, workdir, executable=executable,
                               record=lambda: write_records(runs, workdir, spec))
  if launcher == "slurm":
    path = launchers.write_slurm(todo, workdir, spec, max_parallel=sweep.get("max_parallel", 0))
    print(f"sweep: submit with\n  sbatch --nodes=1 --gpus-per-node=N --ntasks-per-node=N {path}")
  else:
    path = launchers.write_tpu_vm(todo, workdir, spec)
    print(f"sweep: on every worker:\n  gcloud compute tpus tpu-vm ssh $TPU --zone $ZONE "
          f"--worker=all --command \"bash {path.resolve()}\"")
  return 0
