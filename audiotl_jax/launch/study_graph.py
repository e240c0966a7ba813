"""A study config -> its runs, each an `audiotl` command line with the runs it waits for.

The config's fields and the reference rules are described in launch/study.py. Steps are expanded
in dependency order (a step after every step it refers to or lists in `after`), so the list of
runs this returns is itself an order to run them in.
"""
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from audiotl_jax import config as config_lib
from audiotl_jax.errors import UserError, unknown_name
from audiotl_jax.launch import sweep

CONFIG_STAGES = sweep.STAGES  # the stages a sweep expands: one config file each
FLAG_STAGES = ("synthetic", "import", "report")  # steps that take `args`: one run each
FIELDS = ("description", "steps", "report", "selection", "slurm")
STEP_FIELDS = ("step", "stage", "base", "axes", "zip", "fixed", "name", "args", "after",
               "max_parallel", "slurm")
REPORT_FIELDS = ("comparisons", "published", "notes", "state_order", "state_steps")
# "@step" (every run of a step) or "@step/run" (one run), the whole string.
_REF = re.compile(r"@([\w.-]+)(?:/([^/]+))?")
_STEP_NAME = re.compile(r"[\w.-]+")


@dataclass
class Run(sweep.Run):
  step: str = ""
  stage: str = ""
  after: list = field(default_factory=list)    # names of the runs it waits for
  keys: dict = field(default_factory=dict)     # override key -> value (fixed and axes)
  follows: list = field(default_factory=list)  # runs one of its axis values came from
  blocked_by: str | None = None


@dataclass
class Study:
  path: Path          # the config file
  spec: str
  config: object      # the loaded ConfigDict
  workdir: Path
  steps: dict         # step name -> its fields, in run order
  runs: list          # every run, in an order that respects `after`


def load(spec: str, workdir: Path, overrides=()) -> Study:
  """Loads and checks a study config and expands it into runs under `workdir` (absolute)."""
  config = config_lib.load(spec, overrides)
  path, _ = config_lib.resolve_path(spec)
  where = f"study config {path}"
  unknown = sorted(set(config.keys()) - set(FIELDS))
  if unknown:
    raise UserError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; known: "
                    f"{', '.join(FIELDS)}")
  if not config.get("steps"):
    raise UserError(f"{where}: field 'steps' is missing or empty")
  report = config.get("report") or {}
  bad = sorted(set(report) - set(REPORT_FIELDS))
  if bad:
    raise UserError(f"{where}: unknown report field(s) {', '.join(map(repr, bad))}; known: "
                    f"{', '.join(REPORT_FIELDS)}")
  for c in report.get("comparisons") or ():
    if isinstance(c, str) or len(c) != 3:
      raise UserError(f"{where}: report.comparisons holds {c!r}; each is [question, A, B]")
  steps = _checked_steps(config.steps, where)
  study = Study(path=path, spec=spec, config=config, workdir=Path(workdir), steps={}, runs=[])
  runs_of = {}
  for name in _order(steps, where):
    study.steps[name] = steps[name]
    try:
      runs_of[name] = _expand(steps[name], runs_of, study.workdir)
    except UserError as e:
      raise UserError(f"{where}: step {name!r}: {e}") from None
    study.runs += runs_of[name]
  return study


# ------------------------------------------------------------------ steps and their order
def _checked_steps(raw, where: str) -> dict:
  steps = {}
  for i, step in enumerate(raw):
    if not isinstance(step, dict) or "step" not in step or "stage" not in step:
      raise UserError(f"{where}: steps[{i}] must be a dict with at least 'step' and 'stage'")
    name = str(step["step"])
    unknown = sorted(set(step) - set(STEP_FIELDS))
    if unknown:
      raise UserError(f"{where}: step {name!r}: unknown field(s) {', '.join(map(repr, unknown))}; "
                      f"known: {', '.join(STEP_FIELDS)}")
    if not _STEP_NAME.fullmatch(name) or name in ("logs", "select", "slurm"):
      raise UserError(f"{where}: step name {name!r} must be letters, digits, '.', '_' or '-' and "
                      "not logs, select or slurm (folders of the study)")
    if name in steps:
      raise UserError(f"{where}: two steps are named {name!r}")
    stage = step["stage"]
    if stage not in CONFIG_STAGES + FLAG_STAGES:
      raise UserError(f"{where}: step {name!r}: "
                      f"{unknown_name('stage', stage, CONFIG_STAGES + FLAG_STAGES)}")
    flag = stage in FLAG_STAGES
    wrong = sorted({"base", "axes", "zip", "fixed"} & set(step)) if flag else (
        ["args"] if "args" in step else [])
    if wrong or (not flag and "base" not in step) or (flag and "args" not in step):
      needs = "`args` (a tuple of command-line strings)" if flag else "`base` (its config file)"
      raise UserError(f"{where}: step {name!r}: stage {stage} takes {needs}"
                      + (f", not {', '.join(wrong)}" if wrong else ""))
    if flag and (isinstance(step["args"], str) or
                 not all(isinstance(a, str) for a in step["args"])):
      raise UserError(f"{where}: step {name!r}: args must be a tuple of strings")
    after = step.get("after", ())
    steps[name] = dict(step, step=name, after=(after,) if isinstance(after, str) else tuple(after))
  return steps


def refs(value):
  """(step, run or None) of every reference inside `value` (strings, tuples, lists, dicts)."""
  if isinstance(value, str):
    m = _REF.fullmatch(value)
    if m:
      yield m.group(1), m.group(2)
  elif isinstance(value, (tuple, list)):
    for v in value:
      yield from refs(v)
  elif isinstance(value, dict):
    for v in value.values():
      yield from refs(v)


def _needs(step: dict) -> list[str]:
  found = [s for s, _ in refs([step.get(k) for k in ("axes", "fixed", "args", "base")])]
  return list(dict.fromkeys([*found, *step["after"]]))


def _order(steps: dict, where: str) -> list[str]:
  """The steps, each after those it needs, otherwise in config order; a cycle is an error."""
  order, state = [], {}  # state: 1 while visiting, 2 when placed

  def visit(name, path):
    if state.get(name) == 2:
      return
    if state.get(name) == 1:
      cycle = path[path.index(name):] + [name]
      raise UserError(f"{where}: steps wait for each other in a cycle: {' -> '.join(cycle)}")
    state[name] = 1
    for need in _needs(steps[name]):
      if need not in steps:
        what = (f"`after` names {need!r}, which is not a step" if need in steps[name]["after"]
                else f"reference '@{need}' names no step")
        raise UserError(f"{where}: step {name!r}: {what}; steps: {', '.join(steps)}")
      visit(need, path + [name])
    state[name] = 2
    order.append(name)

  for name in steps:
    visit(name, [])
  return order


# ------------------------------------------------------------------ expansion
def _targets(step: str, run: str | None, runs_of: dict) -> list:
  runs = runs_of[step]
  if run is None:
    return runs
  found = [r for r in runs if r.name == f"{step}/{run}"]
  if not found:
    raise UserError(f"reference '@{step}/{run}' names no run of step {step!r}; its runs: "
                    f"{', '.join(r.name.split('/', 1)[1] for r in runs)}")
  return found


def _resolve(value, runs_of: dict, study: Path, deps: list):
  """`value` with "{study}" filled in and references replaced by the comma-joined workdirs of
  their runs (added to `deps`)."""
  if isinstance(value, str):
    m = _REF.fullmatch(value)
    if m:
      targets = _targets(m.group(1), m.group(2), runs_of)
      deps += [t.name for t in targets]
      return ",".join(t.workdir for t in targets)
    return value.replace("{study}", str(study))
  if isinstance(value, (tuple, list)):
    return type(value)(_resolve(v, runs_of, study, deps) for v in value)
  return value


def _expand(step: dict, runs_of: dict, study: Path) -> list[Run]:
  name, stage = step["step"], step["stage"]
  deps = [r.name for s in step["after"] for r in runs_of[s]]
  if stage in FLAG_STAGES:
    args = [_resolve(a, runs_of, study, deps) for a in step["args"]]
    run_name = step.get("name") or name
    if "--workdir" in args[:-1]:  # the step says where it writes (a report: the study folder)
      workdir = args[args.index("--workdir") + 1]
    else:
      workdir = str(study / name / run_name)
      args += ["--workdir", workdir]
    return [Run(name=f"{name}/{run_name}", workdir=workdir, args=[stage, *args], step=name,
                stage=stage, after=list(dict.fromkeys(deps)))]
  fixed = [(str(k), _resolve(v, runs_of, study, deps)) for k, v in step.get("fixed", ())]
  axes, origin = [], {}  # origin: axis key -> {workdir: run name} for its referenced values
  for key, values in step.get("axes", ()):
    values = (values,) if isinstance(values, str) else values
    out = []
    for v in values:
      m = _REF.fullmatch(v) if isinstance(v, str) else None
      if m is None:
        out.append(_resolve(v, runs_of, study, deps))
        continue
      for t in _targets(m.group(1), m.group(2), runs_of):
        out.append(t.workdir)
        origin.setdefault(str(key), {})[t.workdir] = t.name
    axes.append((str(key), tuple(out)))
  base = _resolve(step["base"], runs_of, study, deps)
  runs = sweep.expand_runs(stage, base, axes, study / name, fixed=fixed,
                           zip_groups=step.get("zip", ()),
                           name=step.get("name") or ("" if axes else name))
  out = []
  for r in runs:
    follows = [origin[k][v] for k, v in r.values.items() if v in origin.get(k, {})]
    out.append(Run(name=f"{name}/{r.name}", workdir=r.workdir, args=r.args, values=r.values,
                   step=name, stage=stage, after=list(dict.fromkeys(deps + follows)),
                   keys={**dict(fixed), **r.values}, follows=follows))
  return out


def normpath(p) -> str:
  """A path compared as the same folder however it was written."""
  return os.path.normpath(os.path.abspath(os.fspath(p))) if p else ""
