"""Synthetic DCASE 2018 Task 3 bird audio detection data: three sets in their published layouts.

A clip is a Natural-sounds background (wind, rain, streams: their AudioSet namesakes' textures),
with or without bird calls (the Animal family's chirps, as synthetic AudioSet's bird classes), and
sometimes a distractor of another family. The three sets differ the way the real ones do, in
their backgrounds, bird share, call level and distractors, so the challenge's cross-set protocol
(train on two sets, test on the third) meets a real domain shift.
"""
import numpy as np
from tqdm import tqdm

from audiotl_jax.data.synthetic import catalog, sounds
from audiotl_jax.data.synthetic.writing import build_once, check_min, write_wav
from audiotl_jax.errors import unknown_name

BIRDS = ("Bird vocalization, bird call, bird song", "Chirp, tweet", "Squawk", "Pigeon, dove",
         "Crow", "Owl")
# datasetid: (metadata CSV, wav folder, item-id form, share of clips with birds, backgrounds,
# call level range in dB re the background, distractor class, distractor probability).
SETS = {
    "ff1010bird": ("ff1010bird_metadata_2018.csv", "ff1010bird_wav/wav", "number", 0.25,
                   ("Wind", "Stream", "Rain", "Rustling leaves"), (-9, 3), "Vehicle", 0.2),
    "warblrb10k": ("warblrb10k_public_metadata_2018.csv", "warblrb10k_public_wav/wav",
                   "short uuid", 0.75, ("Wind", "Rustling leaves", "Wind noise (microphone)"),
                   (-6, 6), "Speech", 0.3),
    "BirdVox-DCASE-20k": ("BirdVoxDCASE20k_csvpublic.csv", "BirdVox-DCASE-20k/wav", "uuid", 0.5,
                          ("Wind", "Rain", "Waterfall"), (-15, -3), "Insect", 0.3),
}
COLUMNS = "itemid,datasetid,hasbird"


def _item_ids(form, count, rng):
  """Ids in each set's own style: ff1010bird numbers, warblr and BirdVox (shortened) UUIDs."""
  ids = set()
  while len(ids) < count:
    if form == "number":
      ids.add(str(int(rng.integers(100, 200000))))
    else:
      h = "".join(f"{b:02x}" for b in rng.integers(0, 256, 16))
      parts = [h[:8], h[8:12], h[12:16], h[16:20], h[20:]]
      ids.add("-".join(parts[:4] if form == "short uuid" else parts))
  return sorted(ids)


def bird_clip(set_id, hasbird, rng, n, sr):
  """One clip of a set: background, calls when `hasbird`, a distractor with the set's chance."""
  _, _, _, _, backgrounds, (lo, hi), distractor, p = SETS[set_id]
  x = catalog.render(backgrounds[rng.integers(len(backgrounds))], rng, n, sr, jitter=0.05)
  if hasbird:
    calls = catalog.render(BIRDS[rng.integers(len(BIRDS))], rng, n, sr, jitter=0.05)
    x = x + 10 ** (rng.uniform(lo, hi) / 20) * calls
  if rng.random() < p:
    x = x + 10 ** (rng.uniform(-12, -3) / 20) * catalog.render(distractor, rng, n, sr,
                                                                jitter=0.05)
  return x


def make_bird_detection(root, *, clips_per_set=100, sets=tuple(SETS), sample_rate=16000,
                        clip_seconds=2.0, seed=0, progress=False) -> dict:
  """Writes the bird audio detection development layout of `sets` (default all three).

  Per set root/<metadata CSV> (`itemid,datasetid,hasbird`) and root/<set folder>/wav/<itemid>.wav,
  with the real sets' file names; each set's share of bird clips is the real one's (about 25 %,
  75 %, 50 %), exactly rounded, so every set has both labels. The real clips are 10 s at
  44.1 kHz; sizes are parameters.
  """
  check_min(clips_per_set=(clips_per_set, 4), sets=(len(sets), 1),
            clip_seconds=(clip_seconds, 0.5), sample_rate=(sample_rate, 8000))
  for s in sets:
    if s not in SETS:
      raise unknown_name("bird detection set", s, SETS)
  args = dict(clips_per_set=clips_per_set, sets=list(sets), sample_rate=sample_rate,
              clip_seconds=clip_seconds, seed=seed)
  return build_once(root, "dcase2018_task3", args, lambda r: _build(r, progress=progress, **args))


def _build(root, *, clips_per_set, sets, sample_rate, clip_seconds, seed, progress):
  n = int(round(clip_seconds * sample_rate))
  summary = {"paths": {}, "sets": {}, "sample_rate": sample_rate, "clip_seconds": clip_seconds}
  bar = tqdm(total=len(sets) * clips_per_set, desc="synthetic bird detection",
             disable=not progress)
  for set_id in sets:
    si = list(SETS).index(set_id)
    csv_name, wav_dir, form, share = SETS[set_id][:4]
    rng = np.random.default_rng([seed, 51, si])
    ids = [str(i) for i in rng.permutation(_item_ids(form, clips_per_set, rng))]
    birds = min(max(1, int(round(share * clips_per_set))), clips_per_set - 1)
    labels = rng.permutation([1] * birds + [0] * (clips_per_set - birds))
    (root / wav_dir).mkdir(parents=True)
    rows = []
    for j, (item, hasbird) in enumerate(zip(ids, labels)):
      clip_rng = np.random.default_rng([seed, 52, si, j])
      x = bird_clip(set_id, hasbird, clip_rng, n, sample_rate)
      write_wav(root / wav_dir / f"{item}.wav", sounds.finish(x, clip_rng), sample_rate)
      rows.append(f"{item},{set_id},{hasbird}\n")
      bar.update()
    (root / csv_name).write_text(COLUMNS + "\n" + "".join(sorted(rows)))
    summary["paths"][set_id] = csv_name
    summary["sets"][set_id] = {"bird": birds, "no bird": clips_per_set - birds}
  bar.close()
  return summary
