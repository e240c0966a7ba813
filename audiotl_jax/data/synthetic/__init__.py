"""Synthetic, ontology-structured AudioSet and downstream tasks, written in the real layouts.

The demo and the tests run end to end without downloads: `make_audioset` writes segment CSVs in
the official format with one wav per segment; `make_speech_commands` and `make_acoustic_scenes`
write the Speech Commands v2 and DCASE 2018 Task 1 development layouts. The sounds are built so
that a transfer study means something: each top-level AudioSet branch is its own acoustic family,
a class is a variation of its family with parameters set by its place in the tree (siblings
differ, cousins stay closer than strangers), spoken words are built like Human sounds (glottal
pulses through formant filters) and scenes mix the Natural-sounds and Sounds-of-things families.
Everything is a function of the seed: the same seed writes byte-identical files.
"""
from pathlib import Path

from audiotl_jax.data.synthetic.audioset import DEFAULT_SUBSETS, make_audioset
from audiotl_jax.data.synthetic.downstream import (DEFAULT_CITIES, DEFAULT_SCENES, DEFAULT_WORDS,
                                                   make_acoustic_scenes, make_speech_commands)
from audiotl_jax.data.synthetic.writing import build_once
from audiotl_jax.errors import unknown_name

__all__ = ["DEFAULT_CITIES", "DEFAULT_SCENES", "DEFAULT_SUBSETS", "DEFAULT_WORDS",
           "make_acoustic_scenes", "make_audioset", "make_demo_data", "make_speech_commands"]

_SCALES = {
    "demo": {"audioset": dict(num_classes_per_subset=6, clips_per_class=40,
                              eval_clips_per_class=10),
             "speech_commands": dict(clips_per_word=60, speakers=30),
             "acoustic_scenes": dict(scenes=DEFAULT_SCENES[:6], clips_per_scene=40)},
    "test": {"audioset": dict(num_classes_per_subset=2, clips_per_class=3, eval_clips_per_class=2),
             "speech_commands": dict(clips_per_word=6, speakers=6, noise_seconds=2.0),
             "acoustic_scenes": dict(scenes=DEFAULT_SCENES[:3], clips_per_scene=8,
                                     clip_seconds=1.0)},
}


def make_demo_data(root, *, scale="demo", seed=0) -> dict:
  """Everything the demo needs: root/audioset, root/speech_commands, root/acoustic_scenes.

  scale "demo" (~2,400 clips, seconds to generate) or "test" (~150 clips, well under a second).
  A second call with the same arguments does no work (root/.synthetic.json); a different scale
  or seed regenerates. Returns {"audioset": ..., "speech_commands": ..., "acoustic_scenes": ...}
  with each generator's summary.
  """
  if scale not in _SCALES:
    raise unknown_name("synthetic data scale", scale, _SCALES)
  root, progress = Path(root), scale == "demo"
  makers = {"audioset": make_audioset, "speech_commands": make_speech_commands,
            "acoustic_scenes": make_acoustic_scenes}

  def run_all(r):
    return {name: make(r / name, seed=seed, progress=progress, **_SCALES[scale][name])
            for name, make in makers.items()}

  # The stamp only marks the tree complete; the summaries come from the generators' own stamps,
  # which answer at once, so they hold current paths even if the tree was moved.
  build_once(root, "demo", {"scale": scale, "seed": seed}, lambda r: (run_all(r), {})[1])
  return run_all(root)
