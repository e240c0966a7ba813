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
import io
import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from audiotl_jax import ontology as onto
from audiotl_jax.data import sounds
from audiotl_jax.errors import UserError, unknown_name

DEFAULT_SUBSETS = ("Animal", "Human sounds", "Music", "Natural sounds", "Sounds of things")
DEFAULT_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
DEFAULT_SCENES = ("airport", "bus", "metro", "metro_station", "park", "public_square",
                  "shopping_mall", "street_pedestrian", "street_traffic", "tram")
DEFAULT_CITIES = ("barcelona", "helsinki", "london", "paris", "stockholm", "vienna")
_STAMP = ".synthetic.json"
_VERSION = 1
_DIMS = 6  # parameters per class, each in [0, 1]; every family reads them its own way
_YT_CHARS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))
# Peterson & Barney (1952) adult-male averages of F1-F3 in Hz.

def _write(path, x, sr):
  pcm = np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)
  # Through memory: writing to a path makes libsndfile fsync every file on close, which costs
  # more than synthesising it. The bytes are the same.
  buf = io.BytesIO()
  sf.write(buf, pcm, sr, format="WAV", subtype="PCM_16")
  Path(path).write_bytes(buf.getvalue())


def _class_params(ontology, root, mid):
  """Parameters from the path root -> class: each level moves them less than the one above.

  Each level spreads the siblings over that level's share of the range, in a different order
  per parameter (seeded by the parent), so siblings differ everywhere but stay near their parent.
  """
  parent, queue = {root: None}, [root]
  for node in queue:  # breadth first: the shortest path, in ontology order
    for c in ontology.nodes[node].children:
      if c not in parent:
        parent[c] = node
        queue.append(c)
  path, m = [], mid
  while parent[m] is not None:
    path.append((parent[m], ontology.nodes[parent[m]].children.index(m)))
    m = parent[m]
  u = 0.5 + np.random.default_rng(zlib.crc32(mid.encode())).uniform(-0.02, 0.02, _DIMS)
  for level, (p, i) in enumerate(reversed(path)):
    kids = len(ontology.nodes[p].children)
    order = np.random.default_rng(zlib.crc32(p.encode())).permuted(
        np.tile(np.arange(kids), (_DIMS, 1)), axis=1)
    u += 0.6 * 0.45 ** level * ((order[:, i] + 0.5) / kids - 0.5)
  return np.clip(u, 0.0, 1.0)


def _choose_classes(ontology, name, k, taken):
  """Up to k unused classes of a subset, round robin over the named nodes' children.

  When k is below the number of children, the children taken first are evenly spaced over the
  ontology's order, so a small pick still spans the branch; the named nodes themselves come last.
  """
  sub = ontology.subset(name)
  avail = [m for m in sub.mids if m not in taken]
  if k is None or k >= len(avail):
    return avail
  trainable = set(ontology.classes)
  heads = [c for p in name.split("+") for c in ontology.nodes[ontology.find(p)].children]
  groups = [[] for _ in heads]
  rest = []
  # Leaves first, and among them classes of one branch only (a bell under both Music and Sounds
  # of things is a poor example of either).
  for m in sorted(avail, key=lambda m: (bool(ontology.descendants(m, False) & trainable),
                                        len(ontology.branch_of(m)) > 1)):
    g = next((i for i, h in enumerate(heads) if m in ontology.descendants(h)), None)
    (rest if g is None else groups[g]).append(m)
  spread = list(dict.fromkeys(int(j * len(heads) / min(k, len(heads)))
                              for j in range(min(k, len(heads)))))
  groups = [groups[i] for i in spread] + [g for i, g in enumerate(groups) if i not in spread]
  picked = []
  while len(picked) < k and any(groups):
    for g in groups:
      if g and len(picked) < k:
        picked.append(g.pop(0))
  picked += rest[:k - len(picked)]
  return sorted(picked, key=ontology.class_index.get)


def _prepare(root, kind, args, build):
  """Runs build(root) unless root holds a complete stamp with these arguments.

  A stamped root is ours, so a changed call wipes it (no stale files survive); an unstamped
  non-empty root is the user's and is never touched. The stamp keeps summary["paths"] relative
  to root, so a moved tree still answers with its current paths.
  """
  root = Path(root)
  stamp = root / _STAMP
  want = json.loads(json.dumps({"kind": kind, "version": _VERSION, "args": args}))
  if stamp.is_file():
    try:
      old = json.loads(stamp.read_text())
    except ValueError:
      old = {}
    if old.get("complete") and all(old.get(k) == v for k, v in want.items()):
      return _absolute(old["summary"], root)
    shutil.rmtree(root)
  elif root.exists() and any(root.iterdir()):
    raise UserError(f"{root} is not empty and was not written by the synthetic generator (no "
                    f"{_STAMP}); choose an empty or new directory")
  root.mkdir(parents=True, exist_ok=True)
  stamp.write_text(json.dumps({**want, "complete": False}))
  summary = build(root)
  stamp.write_text(json.dumps({**want, "complete": True, "summary": summary}, indent=1))
  return _absolute(summary, root)


def _absolute(summary, root):
  paths = {k: str(root / v) for k, v in summary.get("paths", {}).items()}
  return {**summary, "root": str(root), "paths": paths}


def _check(**values):
  for name, (value, low) in values.items():
    if value < low:
      raise UserError(f"synthetic data: {name} must be >= {low}, got {value}")


def make_audioset(root, *, subsets=DEFAULT_SUBSETS, clips_per_class=40,
                  num_classes_per_subset=None, eval_clips_per_class=10, clip_seconds=1.0,
                  sample_rate=16000, multi_label_prob=0.25, seed=0, ontology=None,
                  progress=False) -> dict:
  """Writes an AudioSet-like tree: official-format segment CSVs and one wav per segment.

  root/balanced_train_segments.csv, root/eval_segments.csv and
  root/audio/{balanced_train,eval}/Y{YTID}_{start:.3f}_{end:.3f}.wav. Classes are the trainable
  classes of each subset (up to num_classes_per_subset, spread over the branch, none shared
  between subsets); a clip sounds like the top-level branch its subset belongs to. With
  probability multi_label_prob a clip also carries a second generated class. The stamp that lets
  a repeated call skip the work records the arguments, not the ontology passed in.
  """
  if isinstance(subsets, str):
    subsets = (subsets,)
  _check(clips_per_class=(clips_per_class, 1), eval_clips_per_class=(eval_clips_per_class, 1),
         num_classes_per_subset=(num_classes_per_subset or 1, 1), clip_seconds=(clip_seconds, 0.1),
         sample_rate=(sample_rate, 8000))
  if not 0 <= multi_label_prob <= 1:
    raise UserError(f"synthetic AudioSet: multi_label_prob must be in [0, 1], "
                    f"got {multi_label_prob}")
  args = dict(subsets=list(subsets), clips_per_class=clips_per_class,
              num_classes_per_subset=num_classes_per_subset,
              eval_clips_per_class=eval_clips_per_class, clip_seconds=clip_seconds,
              sample_rate=sample_rate, multi_label_prob=multi_label_prob, seed=seed)
  ontology = ontology or onto.Ontology.load()
  return _prepare(root, "audioset", args,
                  lambda r: _build_audioset(r, ontology, progress=progress, **args))


def _build_audioset(root, ontology, *, subsets, clips_per_class, num_classes_per_subset,
                    eval_clips_per_class, clip_seconds, sample_rate, multi_label_prob, seed,
                    progress):
  classes, by_subset, family, params = [], {}, {}, {}
  for name in subsets:
    chosen = _choose_classes(ontology, name, num_classes_per_subset, set(classes))
    if not chosen:
      raise UserError(f"synthetic AudioSet: every class of subset {name!r} is already taken by "
                      f"an earlier subset in {list(subsets)}")
    by_subset[ontology.subset(name).name] = chosen
    roots = set().union(*(ontology.branch_of(p) for p in name.split("+")))
    for m in chosen:
      top = next(r for r in ontology.top_level() if r in roots & ontology.branch_of(m))
      family[m] = ontology.nodes[top].name
      params[m] = _class_params(ontology, top, m)
    classes += chosen
  n = int(round(clip_seconds * sample_rate))

  def sound(m, rng):
    return sounds.unit(sounds.FAMILIES.get(family[m], sounds.broadband)(params[m], rng, n, sample_rate))

  splits = (("balanced_train", clips_per_class), ("eval", eval_clips_per_class))
  total = len(classes) * (clips_per_class + eval_clips_per_class)
  ids, rng = [], np.random.default_rng([seed, 1])
  while len(ids) < total:  # unique 11-character YouTube-like ids
    draw = _YT_CHARS[rng.integers(0, 64, (total, 11))]
    ids = list(dict.fromkeys(ids + ["".join(c) for c in draw]))
  bar, counter, multi = tqdm(total=total, desc="synthetic AudioSet", disable=not progress), 0, 0
  for split_no, (split, per_class) in enumerate(splits):
    (root / "audio" / split).mkdir(parents=True)
    rows = []
    for ci, m in enumerate(classes):
      for j in range(per_class):
        rng = np.random.default_rng([seed, 2, split_no, ci, j])
        x, labels = sound(m, rng), [m]
        if len(classes) > 1 and rng.random() < multi_label_prob:
          other = classes[(ci + 1 + rng.integers(len(classes) - 1)) % len(classes)]
          x, labels, multi = x + rng.uniform(0.25, 0.8) * sound(other, rng), [m, other], multi + 1
        start = 10.0 * rng.integers(0, 30)
        ytid = ids[counter]
        _write(root / "audio" / split / f"Y{ytid}_{start:.3f}_{start + clip_seconds:.3f}.wav",
               sounds.finish(x, rng), sample_rate)
        rows.append((ytid, start, start + clip_seconds, labels))
        counter += 1
        bar.update()
    rows.sort()
    with open(root / f"{split}_segments.csv", "w", encoding="utf-8") as f:
      f.write(f"# Segments csv created by audiotl_jax.data.synthetic (seed={seed})\n"
              f"# num_ytids={len(rows)}, num_segs={len(rows)}, "
              f"num_unique_labels={len({l for r in rows for l in r[3]})}, "
              f"num_positive_labels={sum(len(r[3]) for r in rows)}\n"
              "# YTID, start_seconds, end_seconds, positive_labels\n")
      f.writelines(f'{y}, {s:.3f}, {e:.3f}, "{",".join(l)}"\n' for y, s, e, l in rows)
  bar.close()
  return {"paths": {"train_csv": "balanced_train_segments.csv", "eval_csv": "eval_segments.csv",
                    "train_audio": "audio/balanced_train", "eval_audio": "audio/eval"},
          "classes": by_subset, "families": family, "train_clips": len(classes) * clips_per_class,
          "eval_clips": len(classes) * eval_clips_per_class, "multi_label_clips": multi,
          "sample_rate": sample_rate, "clip_seconds": clip_seconds}


def _word_phonemes(words):
  """A distinct 2-3 phoneme sequence per word (vowels and fricatives), seeded by the word."""
  out, taken = {}, set()
  for w in words:
    rng = np.random.default_rng(zlib.crc32(w.encode()))
    while True:
      pattern = ("VV", "FV", "VF", "FVV", "VFV", "VVF")[rng.integers(6)]
      seq = tuple(str(rng.choice(list(sounds.VOWELS if p == "V" else sounds.FRICATIVES))) for p in pattern)
      if seq not in taken and all(a != b for a, b in zip(seq, seq[1:])):
        break
    out[w] = seq
    taken.add(seq)
  return out


def _say(phonemes, speaker, rng, n, sr):
  """One utterance: a speaker's pitch, vocal-tract scale and tempo, with random timing."""
  f0, scale, tempo = speaker
  lengths = [tempo * rng.uniform(0.8, 1.2) * (0.16 if p in sounds.VOWELS else 0.09) for p in phonemes]
  s = rng.uniform(0.05, max(0.06, n / sr - sum(lengths) - 0.05))
  units = []
  for p, length in zip(phonemes, lengths):
    if p in sounds.VOWELS:
      units.append((s, length + 0.02, "v",
                    scale * np.array(sounds.VOWELS[p]) * np.exp(0.03 * rng.standard_normal(3)), 1.0))
    else:
      units.append((s, length, "f", scale * sounds.FRICATIVES[p], 0.25))
    s += length
  t = np.arange(n) / sr  # a gently falling pitch, as in a single spoken word
  pitch = f0 * 2 ** ((rng.normal(0, 0.5) - 2 * t * sr / n) / 12)
  return sounds.utter(n, sr, rng, pitch, units, breath=0.03)


def make_speech_commands(root, *, words=DEFAULT_WORDS, clips_per_word=60, speakers=30,
                         sample_rate=16000, clip_seconds=1.0, noise_seconds=10.0, seed=0,
                         progress=False) -> dict:
  """Writes the Speech Commands v2 layout: root/<word>/<speaker>_nohash_<n>.wav.

  Plus validation_list.txt and testing_list.txt (`word/file.wav`; each speaker wholly in one
  split, ~10% each) and root/_background_noise_/*.wav. Words are formant sequences spoken like
  the Human-sounds family; a speaker sets pitch, vocal-tract scale and tempo.
  """
  _check(clips_per_word=(clips_per_word, 1), speakers=(speakers, 3), words=(len(words), 2),
         clip_seconds=(clip_seconds, 0.5), sample_rate=(sample_rate, 8000))
  if len(set(words)) != len(words) or not all(str(w).isidentifier() for w in words):
    raise UserError(f"speech commands: words must be distinct plain names, got {list(words)}")
  args = dict(words=list(words), clips_per_word=clips_per_word, speakers=speakers,
              sample_rate=sample_rate, clip_seconds=clip_seconds, noise_seconds=noise_seconds,
              seed=seed)
  return _prepare(root, "speech_commands", args,
                  lambda r: _build_speech_commands(r, progress=progress, **args))


def _build_speech_commands(root, *, words, clips_per_word, speakers, sample_rate, clip_seconds,
                           noise_seconds, seed, progress):
  rng = np.random.default_rng([seed, 3])
  hashes = list(dict.fromkeys(f"{h:08x}" for h in rng.integers(0, 2 ** 32, 4 * speakers)))
  f0 = 85 * 3 ** rng.random(speakers)  # 85-255 Hz; the vocal tract scales along with pitch
  voices = [(f, 0.95 + 0.25 * np.log(f / 85) / np.log(3) + rng.normal(0, 0.03),
             rng.uniform(0.8, 1.25)) for f in f0]
  order = rng.permutation(speakers)
  k = max(1, int(round(0.1 * speakers)))
  split = {int(i): "validation" for i in order[:k]} | {int(i): "testing" for i in order[k:2 * k]}
  phonemes, n = _word_phonemes(words), int(round(clip_seconds * sample_rate))
  lists, counts = {"validation": [], "testing": []}, {"train": 0, "validation": 0, "testing": 0}
  for wi, w in enumerate(tqdm(words, desc="synthetic speech commands", disable=not progress)):
    (root / w).mkdir()
    who = rng.permutation(speakers)  # every speaker says every word when clips allow
    for j in range(clips_per_word):
      spk = int(who[j % speakers])
      name = f"{w}/{hashes[spk]}_nohash_{j // speakers}.wav"
      clip_rng = np.random.default_rng([seed, 4, wi, j])
      _write(root / name, sounds.finish(_say(phonemes[w], voices[spk], clip_rng, n, sample_rate),
                                  clip_rng), sample_rate)
      part = split.get(spk, "train")
      counts[part] += 1
      if part != "train":
        lists[part].append(name)
  for part, names in lists.items():
    (root / f"{part}_list.txt").write_text("".join(f"{x}\n" for x in sorted(names)))
  noise_dir, m = root / "_background_noise_", int(noise_seconds * sample_rate)
  noise_dir.mkdir()
  pink = np.fft.irfft(np.fft.rfft(rng.standard_normal(m)) / np.sqrt(np.arange(m // 2 + 1) + 1), m)
  tap = sounds.texture(np.r_[0.2, 0.8, 0.3, 0.9, 0.3, 0.6], rng, m, sample_rate)
  dishes = sounds.impacts(np.r_[0.2, 0.9, 0.7, 0.5, 0.3, 0.2], rng, m, sample_rate)
  dishes += 0.1 * sounds.texture(np.full(_DIMS, 0.5), rng, m, sample_rate)
  for name, x in (("white_noise", rng.standard_normal(m)), ("pink_noise", pink),
                  ("running_tap", tap), ("doing_the_dishes", dishes)):
    _write(noise_dir / f"{name}.wav", 0.5 * x / np.max(np.abs(x)), sample_rate)
  return {"paths": {"validation_list": "validation_list.txt", "testing_list": "testing_list.txt",
                    "background_noise": "_background_noise_"},
          "words": list(words), "phonemes": {w: list(p) for w, p in phonemes.items()},
          "speakers": speakers, "clips": counts, "sample_rate": sample_rate}


def make_acoustic_scenes(root, *, scenes=DEFAULT_SCENES, clips_per_scene=40,
                         cities=DEFAULT_CITIES[:3], locations_per_city=2, sample_rate=16000,
                         clip_seconds=2.0, seed=0, progress=False) -> dict:
  """Writes the DCASE 2018 Task 1 development layout (TUT Urban Acoustic Scenes 2018).

  root/audio/<scene>-<city>-<location>-<segment>-a.wav, root/meta.csv and
  root/evaluation_setup/fold1_{train,evaluate,test}.csv (TAB-separated). A location lies wholly
  in train or evaluate (~70/30 per scene). The real set is 48 kHz; sample_rate is a parameter.
  A scene is Natural-sounds texture plus Sounds-of-things events with scene parameters, shifted
  per location (the latent a location split tests) and varied per clip.
  """
  _check(clips_per_scene=(clips_per_scene, 1), scenes=(len(scenes), 2), cities=(len(cities), 1),
         locations=(len(cities) * locations_per_city, 2), clip_seconds=(clip_seconds, 0.5),
         sample_rate=(sample_rate, 8000))
  args = dict(scenes=list(scenes), clips_per_scene=clips_per_scene, cities=list(cities),
              locations_per_city=locations_per_city, sample_rate=sample_rate,
              clip_seconds=clip_seconds, seed=seed)
  return _prepare(root, "acoustic_scenes", args,
                  lambda r: _build_acoustic_scenes(r, progress=progress, **args))


def _build_acoustic_scenes(root, *, scenes, clips_per_scene, cities, locations_per_city,
                           sample_rate, clip_seconds, seed, progress):
  (root / "audio").mkdir()
  (root / "evaluation_setup").mkdir()
  n, next_location = int(round(clip_seconds * sample_rate)), {c: 0 for c in cities}
  meta, train, evaluate = [], [], []
  bar = tqdm(total=len(scenes) * clips_per_scene, desc="synthetic scenes", disable=not progress)
  for si, scene in enumerate(scenes):
    recipe = np.random.default_rng(zlib.crc32(scene.encode())).uniform(0.1, 0.9, 2 * _DIMS + 1)
    places = []  # (city, location id): ids run on per city across scenes, as in the real set
    for city in cities:
      for _ in range(locations_per_city):
        places.append((city, next_location[city]))
        next_location[city] += 1
    held_out = set(np.random.default_rng([seed, 5, si]).permutation(len(places))[
        :max(1, int(round(0.3 * len(places))))].tolist())
    for j in range(clips_per_scene):
      p = j % len(places)
      city, loc = places[p]
      shift = np.random.default_rng([seed, 6, si, p]).normal(0, 0.05, 2 * _DIMS)
      u = np.clip(recipe[:-1] + shift, 0, 1)
      rng = np.random.default_rng([seed, 7, si, j])
      x = sounds.unit(sounds.texture(u[:_DIMS], rng, n, sample_rate)) + (
          (0.2 + 0.8 * recipe[-1]) * sounds.unit(sounds.impacts(u[_DIMS:], rng, n, sample_rate)))
      name = f"audio/{scene}-{city}-{loc}-{j // len(places)}-a.wav"
      _write(root / name, sounds.finish(x, rng), sample_rate)
      meta.append(f"{name}\t{scene}\t{city}-{loc}\ta\n")
      (evaluate if p in held_out else train).append(f"{name}\t{scene}\n")
      bar.update()
  bar.close()
  setup = root / "evaluation_setup"
  (root / "meta.csv").write_text("filename\tscene_label\tidentifier\tsource_label\n"
                                 + "".join(sorted(meta)))
  (setup / "fold1_train.csv").write_text("filename\tscene_label\n" + "".join(sorted(train)))
  (setup / "fold1_evaluate.csv").write_text("filename\tscene_label\n" + "".join(sorted(evaluate)))
  (setup / "fold1_test.csv").write_text(
      "filename\n" + "".join(sorted(x.split("\t")[0] + "\n" for x in evaluate)))
  return {"paths": {"meta": "meta.csv", "train": "evaluation_setup/fold1_train.csv",
                    "evaluate": "evaluation_setup/fold1_evaluate.csv",
                    "test": "evaluation_setup/fold1_test.csv"},
          "scenes": list(scenes), "clips": {"train": len(train), "evaluate": len(evaluate)},
          "sample_rate": sample_rate, "clip_seconds": clip_seconds}


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
  _prepare(root, "demo", {"scale": scale, "seed": seed}, lambda r: (run_all(r), {})[1])
  return run_all(root)
