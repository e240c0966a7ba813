"""`audiotl synthetic`: the demo's synthetic AudioSet and downstream tasks, in their real layouts.

  audiotl synthetic --workdir data/raw --scale test

Writes DIR/audioset, DIR/speech_commands, DIR/acoustic_scenes (data/synthetic/; `--datasets
a+b` picks others: every layout the study configs read), ready for
`audiotl prepare`; a second call with the same scale and seed does no work, so a study step that
makes its data is skipped once done (its stamp, DIR/.synthetic.json, says `complete`).
"""
from audiotl_jax import fileio
from audiotl_jax.data import synthetic


def run(config, workdir) -> dict:
  workdir = fileio.local_only(workdir, "`audiotl synthetic` writes audio files: give it a local "
                              "--workdir")
  datasets = [d for d in str(config.get("datasets", "")).split("+") if d] or None
  summary = synthetic.make_demo_data(workdir, scale=config.scale, seed=config.seed,
                                     datasets=datasets)
  for name in summary:
    print(f"synthetic: {name} in {workdir / name}")
  return summary
