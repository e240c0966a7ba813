"""Synthetic downstream tasks in their published layouts: Speech Commands v2 (words built like
Human sounds: glottal pulses through formant filters) and DCASE 2018 Task 1 (scenes that mix the
Natural-sounds and Sounds-of-things families).
"""
import zlib

import numpy as np
from tqdm import tqdm

from audiotl_jax.data.synthetic import sounds
from audiotl_jax.data.synthetic.writing import build_once, check_min, write_wav
from audiotl_jax.errors import UserError

DEFAULT_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
DEFAULT_SCENES = ("airport", "bus", "metro", "metro_station", "park", "public_square",
                  "shopping_mall", "street_pedestrian", "street_traffic", "tram")
DEFAULT_CITIES = ("barcelona", "helsinki", "london", "paris", "stockholm", "vienna")


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
  check_min(clips_per_word=(clips_per_word, 1), speakers=(speakers, 3), words=(len(words), 2),
         clip_seconds=(clip_seconds, 0.5), sample_rate=(sample_rate, 8000))
  if len(set(words)) != len(words) or not all(str(w).isidentifier() for w in words):
    raise UserError(f"speech commands: words must be distinct plain names, got {list(words)}")
  args = dict(words=list(words), clips_per_word=clips_per_word, speakers=speakers,
              sample_rate=sample_rate, clip_seconds=clip_seconds, noise_seconds=noise_seconds,
              seed=seed)
  return build_once(root, "speech_commands", args,
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
      write_wav(root / name, sounds.finish(_say(phonemes[w], voices[spk], clip_rng, n, sample_rate),
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
  dishes += 0.1 * sounds.texture(np.full(sounds.DIMS, 0.5), rng, m, sample_rate)
  for name, x in (("white_noise", rng.standard_normal(m)), ("pink_noise", pink),
                  ("running_tap", tap), ("doing_the_dishes", dishes)):
    write_wav(noise_dir / f"{name}.wav", 0.5 * x / np.max(np.abs(x)), sample_rate)
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
  check_min(clips_per_scene=(clips_per_scene, 1), scenes=(len(scenes), 2), cities=(len(cities), 1),
         locations=(len(cities) * locations_per_city, 2), clip_seconds=(clip_seconds, 0.5),
         sample_rate=(sample_rate, 8000))
  args = dict(scenes=list(scenes), clips_per_scene=clips_per_scene, cities=list(cities),
              locations_per_city=locations_per_city, sample_rate=sample_rate,
              clip_seconds=clip_seconds, seed=seed)
  return build_once(root, "acoustic_scenes", args,
                  lambda r: _build_acoustic_scenes(r, progress=progress, **args))


def _build_acoustic_scenes(root, *, scenes, clips_per_scene, cities, locations_per_city,
                           sample_rate, clip_seconds, seed, progress):
  (root / "audio").mkdir()
  (root / "evaluation_setup").mkdir()
  n, next_location = int(round(clip_seconds * sample_rate)), {c: 0 for c in cities}
  meta, train, evaluate = [], [], []
  bar = tqdm(total=len(scenes) * clips_per_scene, desc="synthetic scenes", disable=not progress)
  for si, scene in enumerate(scenes):
    recipe = np.random.default_rng(zlib.crc32(scene.encode())).uniform(0.1, 0.9, 2 * sounds.DIMS + 1)
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
      shift = np.random.default_rng([seed, 6, si, p]).normal(0, 0.05, 2 * sounds.DIMS)
      u = np.clip(recipe[:-1] + shift, 0, 1)
      rng = np.random.default_rng([seed, 7, si, j])
      x = sounds.unit(sounds.texture(u[:sounds.DIMS], rng, n, sample_rate)) + (
          (0.2 + 0.8 * recipe[-1]) * sounds.unit(sounds.impacts(u[sounds.DIMS:], rng, n, sample_rate)))
      name = f"audio/{scene}-{city}-{loc}-{j // len(places)}-a.wav"
      write_wav(root / name, sounds.finish(x, rng), sample_rate)
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
