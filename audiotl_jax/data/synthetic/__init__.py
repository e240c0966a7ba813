"""Synthetic, ontology-structured AudioSet and downstream tasks, written in the real layouts.

The demo, the tests and the studies at `:scale=test` run end to end without downloads:
`make_audioset` writes segment CSVs in the official format with one wav per segment;
`make_speech_commands`, `make_acoustic_scenes` (DCASE 2018 Task 1), `make_dcase2020_task1a`,
`make_bird_detection` (DCASE 2018 Task 3), `make_gtzan`, `make_esc50` and `make_cough` (a CSV
manifest) write the layouts their readers read. The sounds are built so that a transfer study
means something: each top-level AudioSet branch is its own acoustic family, a class is a variation
of its family with parameters set by its place in the tree (siblings differ, cousins stay closer
than strangers), spoken words are built like Human sounds (glottal pulses through formant
filters), scenes mix the Natural-sounds and Sounds-of-things families, and downstream classes
with an AudioSet namesake (ESC-50's dog, GTZAN's jazz, bird calls) borrow its sound (`catalog`).
Everything is a function of the seed: the same seed writes byte-identical files.
"""
from pathlib import Path

from audiotl_jax.data.synthetic.audioset import DEFAULT_SUBSETS, make_audioset
from audiotl_jax.data.synthetic.birds import make_bird_detection
from audiotl_jax.data.synthetic.cough import make_cough
from audiotl_jax.data.synthetic.downstream import (DEFAULT_CITIES, DEFAULT_SCENES, DEFAULT_WORDS,
                                                   make_acoustic_scenes, make_speech_commands)
from audiotl_jax.data.synthetic.events import DEFAULT_CATEGORIES, make_esc50
from audiotl_jax.data.synthetic.music import GENRES, make_gtzan
from audiotl_jax.data.synthetic.scenes import DEVICES, make_dcase2020_task1a
from audiotl_jax.data.synthetic.writing import build_once
from audiotl_jax.errors import UserError, unknown_name

__all__ = ["DEFAULT_CATEGORIES", "DEFAULT_CITIES", "DEFAULT_SCENES", "DEFAULT_SUBSETS",
           "DEFAULT_WORDS", "DEMO_DATASETS", "DEVICES", "GENERATORS", "GENRES",
           "make_acoustic_scenes", "make_audioset", "make_bird_detection", "make_cough",
           "make_dcase2020_task1a", "make_demo_data", "make_esc50", "make_gtzan",
           "make_speech_commands"]

# Dataset name -> generator; each writes root/<name> in the layout of the reader of that name
# (acoustic_scenes: dcase2018_task1; cough: csv, on root/cough/cough.csv).
GENERATORS = {
    "audioset": make_audioset, "speech_commands": make_speech_commands,
    "acoustic_scenes": make_acoustic_scenes, "dcase2020_task1a": make_dcase2020_task1a,
    "dcase2018_task3": make_bird_detection, "gtzan": make_gtzan, "esc50": make_esc50,
    "cough": make_cough,
}
DEMO_DATASETS = ("audioset", "speech_commands", "acoustic_scenes")  # what `audiotl demo` uses

_SCALES = {  # "demo": a few hundred clips per dataset; "test": a few dozen 1 s clips
    # 120 clips per class: pre-training on 720 clips of a branch, 30 times the downstream's 20
    # labelled clips, as pre-training data dwarfs a downstream task's in real studies.
    "demo": {"audioset": dict(num_classes_per_subset=6, clips_per_class=120,
                              eval_clips_per_class=10),
             # 60 speakers, 6 of them in the test split: 150 test clips, so one test error is
             # 0.7 points of accuracy and the demo's seed-to-seed spread is not all test noise.
             "speech_commands": dict(clips_per_word=150, speakers=60),
             "acoustic_scenes": dict(scenes=DEFAULT_SCENES[:6], clips_per_scene=40),
             "dcase2020_task1a": dict(segments_per_location=4),
             "dcase2018_task3": dict(clips_per_set=100),
             "gtzan": dict(clips_per_genre=30),
             "esc50": dict(recordings_per_fold=2, takes=2),
             "cough": dict(speakers=40, clips_per_speaker=8)},
    "test": {"audioset": dict(num_classes_per_subset=2, clips_per_class=3, eval_clips_per_class=2),
             "speech_commands": dict(clips_per_word=6, speakers=6, noise_seconds=2.0),
             "acoustic_scenes": dict(scenes=DEFAULT_SCENES[:3], clips_per_scene=8,
                                     clip_seconds=1.0),
             # Ten scenes (the task's), three locations each: two for train and validation,
             # one for evaluate; a and one other device per segment.
             "dcase2020_task1a": dict(segments_per_location=1, clip_seconds=1.0),
             "dcase2018_task3": dict(clips_per_set=12, clip_seconds=1.0),
             "gtzan": dict(clips_per_genre=4, clip_seconds=1.0),
             "esc50": dict(categories=DEFAULT_CATEGORIES[:6], recordings_per_fold=1, takes=1,
                           clip_seconds=1.0),
             "cough": dict(speakers=10, clips_per_speaker=4)},
}


def make_demo_data(root, *, scale="demo", seed=0, datasets=None) -> dict:
  """Synthetic datasets under root/<name>: `datasets` (names of GENERATORS), by default the
  demo's three (audioset, speech_commands, acoustic_scenes).

  scale "demo" (a few hundred clips per dataset, seconds each) or "test" (a few dozen 1 s clips
  each, well under a second). A second call with the same arguments does no work; a different
  scale or seed regenerates everything. Returns {name: the generator's summary}, whose "root"
  and "paths" say where its files are.
  """
  if scale not in _SCALES:
    raise unknown_name("synthetic data scale", scale, _SCALES)
  names = DEMO_DATASETS if datasets is None else _names(datasets)
  root, progress = Path(root), scale == "demo"
  # The root's stamp claims it for one scale and seed (another wipes it, so nothing stale
  # survives); whether a dataset is complete is its own generator's stamp, so a call with
  # another set of datasets builds just what is missing and never takes a partial tree for a
  # whole one. A stamped dataset answers at once, with its current paths.
  build_once(root, "demo", {"scale": scale, "seed": seed}, lambda r: {})
  return {name: GENERATORS[name](root / name, seed=seed, progress=progress, **_SCALES[scale][name])
          for name in names}


def _names(datasets) -> tuple:
  if isinstance(datasets, str):
    datasets = (datasets,)
  for name in datasets:
    if name not in GENERATORS:
      raise unknown_name("synthetic dataset", name, GENERATORS)
  if not datasets:
    raise UserError(f"make_demo_data: datasets is empty; name some of {', '.join(GENERATORS)}")
  return tuple(dict.fromkeys(datasets))
