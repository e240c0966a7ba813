"""`audiotl ontology plan|find`: inspect the AudioSet ontology and plan pre-training subsets."""
from pathlib import Path

from audiotl_jax.data import ontology
from audiotl_jax.errors import UserError


def run(config, workdir=None) -> None:
  del workdir
  onto = ontology.Ontology.load()
  if config.action == "plan":
    if not Path(config.segments).exists():
      raise UserError(f"segments file {config.segments} does not exist")
    print(ontology.format_plan(ontology.plan(onto, ontology.iter_segments(config.segments),
                                             list(config.subset))))
    return
  sub = onto.subset(config.name)
  print(f"{sub.name}: {len(sub.mids)} trainable classes")
  for mid in sub.mids:
    print(f"  {mid}\t{onto.nodes[mid].name}")
