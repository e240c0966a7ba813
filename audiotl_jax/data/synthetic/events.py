"""Synthetic ESC-50 (Piczak 2015) in its layout: classes built from their AudioSet namesakes.

Each ESC-50 category here maps to the AudioSet class whose synthetic sound it borrows (`catalog`),
so the categories span the Animal, Natural-sounds, Human-sounds and Sounds-of-things families, and
a model pre-trained on synthetic AudioSet meets sounds it has heard (or their cousins).
"""
import numpy as np
from tqdm import tqdm

from audiotl_jax.data.synthetic import catalog, sounds
from audiotl_jax.data.synthetic.writing import build_once, check_min, write_wav
from audiotl_jax.errors import UserError, unknown_name

# category: (ESC-50 target, AudioSet class). The first ten are ESC-10, ordered so that any prefix
# spans several families.
CATEGORIES = {
    "dog": (0, "Dog"), "rain": (10, "Rain"), "crying_baby": (20, "Baby cry, infant cry"),
    "clock_tick": (38, "Tick-tock"), "rooster": (1, "Crowing, cock-a-doodle-doo"),
    "sea_waves": (11, "Waves, surf"), "sneezing": (21, "Sneeze"), "helicopter": (40, "Helicopter"),
    "crackling_fire": (12, "Fire"), "chainsaw": (41, "Chainsaw"),
    "cat": (5, "Cat"), "wind": (16, "Wind"), "laughing": (26, "Laughter"),
    "door_wood_knock": (30, "Knock"), "cow": (3, "Moo"), "breathing": (23, "Breathing"),
    "crickets": (13, "Cricket"), "engine": (44, "Engine"),
}
ESC10 = ("dog", "rooster", "rain", "sea_waves", "crackling_fire", "crying_baby", "sneezing",
         "clock_tick", "helicopter", "chainsaw")
DEFAULT_CATEGORIES = tuple(list(CATEGORIES)[:14])
COLUMNS = "filename,fold,target,category,esc10,src_file,take"


def make_esc50(root, *, categories=DEFAULT_CATEGORIES, recordings_per_fold=2, takes=2,
               sample_rate=16000, clip_seconds=2.0, seed=0, progress=False) -> dict:
  """Writes the ESC-50 layout: root/meta/esc50.csv and root/audio/<fold>-<src>-<take>-<target>.wav.

  Five folds; per category and fold `recordings_per_fold` source recordings (`src_file`, a
  Freesound-like id) of `takes` clips each (takes A, B, ...), so the clips of one recording share
  a fold, as in the real set. A recording shifts its class's parameters a little; a take is a new
  draw of the same recording. The real set is 40 clips of 5 s per class at 44.1 kHz.
  """
  check_min(categories=(len(categories), 2), recordings_per_fold=(recordings_per_fold, 1),
            takes=(takes, 1), clip_seconds=(clip_seconds, 0.5), sample_rate=(sample_rate, 8000))
  if takes > 26 or len(set(categories)) != len(categories):
    raise UserError(f"synthetic ESC-50: categories must be distinct and takes at most 26, got "
                    f"{list(categories)}, takes={takes}")
  for c in categories:
    if c not in CATEGORIES:
      raise unknown_name("synthetic ESC-50 category", c, CATEGORIES)
  args = dict(categories=list(categories), recordings_per_fold=recordings_per_fold, takes=takes,
              sample_rate=sample_rate, clip_seconds=clip_seconds, seed=seed)
  return build_once(root, "esc50", args, lambda r: _build_esc50(r, progress=progress, **args))


def _build_esc50(root, *, categories, recordings_per_fold, takes, sample_rate, clip_seconds,
                 seed, progress):
  (root / "meta").mkdir()
  (root / "audio").mkdir()
  n, rng = int(round(clip_seconds * sample_rate)), np.random.default_rng([seed, 41])
  count = 5 * len(categories) * recordings_per_fold
  sources = rng.choice(np.arange(1000, 300000), count, replace=False)  # unique src_file ids
  rows, k = [], 0
  bar = tqdm(total=count * takes, desc="synthetic ESC-50", disable=not progress)
  for cat in categories:
    target, name = CATEGORIES[cat]
    for fold in range(1, 6):
      for r in range(recordings_per_fold):
        src = int(sources[k])
        u = np.clip(catalog.params(name) + np.random.default_rng([seed, 42, src]).normal(
            0, 0.03, sounds.DIMS), 0, 1)
        k += 1
        for take in range(takes):
          clip_rng = np.random.default_rng([seed, 43, src, take])
          fname = f"{fold}-{src}-{chr(65 + take)}-{target}.wav"
          x = catalog.render(name, clip_rng, n, sample_rate, u=u)
          write_wav(root / "audio" / fname, sounds.finish(x, clip_rng), sample_rate)
          rows.append(f"{fname},{fold},{target},{cat},{cat in ESC10},{src},{chr(65 + take)}\n")
          bar.update()
  bar.close()
  (root / "meta" / "esc50.csv").write_text(COLUMNS + "\n" + "".join(sorted(rows)))
  return {"paths": {"meta": "meta/esc50.csv", "audio": "audio"},
          "categories": {c: CATEGORIES[c][0] for c in categories},
          "families": {c: catalog.family_of(CATEGORIES[c][1]) for c in categories},
          "clips": len(rows), "sample_rate": sample_rate, "clip_seconds": clip_seconds}
