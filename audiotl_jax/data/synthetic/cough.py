"""A synthetic binary cough-detection task, written as a CSV manifest for the `csv` reader.

A cough is built like the Human-sounds family's other sounds: an explosive phase (a noise burst
through an open vocal tract, formants of the speaker's size) and a voiced tail (glottal pulses
through formants, `sounds.utter`), one to three in a bout. The other clips are short sounds of the
same speakers and places: a syllable or two, laughter, breathing (the Human-sounds family) and a
knock (Sounds of things: a burst without a voiced tail). Everything sits on a Natural-sounds
background. Splits are by speaker, as a cough study must split them (no voice in two splits).
"""
import numpy as np
from scipy import signal
from tqdm import tqdm

from audiotl_jax.data.synthetic import catalog, sounds
from audiotl_jax.data.synthetic.writing import build_once, check_min, write_wav

OTHERS = ("syllables", "Laughter", "Breathing", "Knock")
BACKGROUNDS = ("Wind", "Rain", "Stream", "Steam")
LABELS = {"cough": "1", "other": "0"}  # "1" sorts last: the csv reader's positive class


def _cough(voice, rng, n, sr):
  """A bout of 1-3 coughs: each a noise burst (the glottis opening) then a decaying voiced tail."""
  f0, scale = voice
  x, noise = np.zeros(n), rng.standard_normal(n)
  s = rng.uniform(0.02, 0.25)
  for _ in range(rng.integers(1, 4)):
    length = rng.uniform(0.22, 0.38)
    a, b = int(s * sr), min(n, int((s + length) * sr))
    if b - a < int(0.1 * sr):
      break
    t = np.arange(b - a) / sr
    burst = noise[a:b] * (1 - np.exp(-t / 0.003)) * np.exp(-t / rng.uniform(0.02, 0.05))
    tract = sounds.reson(scale * np.array([700, 1220, 2600]), [250, 320, 450], sr)
    burst = signal.sosfilt(tract, burst)
    onset = rng.uniform(0.03, 0.06)  # the voiced tail follows the burst
    units = [(onset, length - onset, "v", scale * np.array(sounds.VOWELS["ah"]), 1.0)]
    pitch = f0 * rng.uniform(1.1, 1.5) * np.ones(b - a)
    tail = sounds.utter(b - a, sr, rng, pitch, units, breath=0.1) * np.exp(-t / 0.12)
    x[a:b] += sounds.unit(burst) + rng.uniform(0.2, 0.6) * sounds.unit(tail)
    s += length + rng.uniform(0.05, 0.3)
  return x


def _syllables(voice, rng, n, sr):
  """One or two spoken syllables of the speaker: vowels, sometimes after a fricative."""
  f0, scale = voice
  units, s = [], rng.uniform(0.05, 0.3)
  for _ in range(rng.integers(1, 3)):
    if rng.random() < 0.5:
      units.append((s, 0.07, "f", scale * sounds.FRICATIVES[rng.choice(list(sounds.FRICATIVES))],
                    0.3))
      s += 0.06
    vowel = sounds.VOWELS[rng.choice(list(sounds.VOWELS))]
    units.append((s, rng.uniform(0.15, 0.25), "v", scale * np.array(vowel), 1.0))
    s += rng.uniform(0.25, 0.35)
  t = np.arange(n) / sr
  return sounds.utter(n, sr, rng, f0 * 2 ** (-t * sr / n / 12), units, breath=0.03)


def clip(kind, voice, rng, n, sr):
  """One clip: "cough" or one of OTHERS, on a quiet Natural-sounds background."""
  if kind == "cough":
    x = sounds.unit(_cough(voice, rng, n, sr))
  elif kind == "syllables":
    x = sounds.unit(_syllables(voice, rng, n, sr))
  else:
    x = catalog.render(kind, rng, n, sr, jitter=0.05)
  bg = catalog.render(BACKGROUNDS[rng.integers(len(BACKGROUNDS))], rng, n, sr, jitter=0.05)
  return x + 10 ** (rng.uniform(-30, -15) / 20) * bg


def make_cough(root, *, speakers=40, clips_per_speaker=8, sample_rate=16000, clip_seconds=1.0,
               seed=0, progress=False) -> dict:
  """Writes root/cough.csv (`path,label,split`; label "1" cough, "0" other) and
  root/audio/<speaker>_<k>.wav: half of each speaker's clips are coughs, the rest other sounds.

  Speakers are split ~70/15/15 into train, validation and test (at least one each), so the
  manifest carries the split and no voice crosses splits.
  """
  check_min(speakers=(speakers, 3), clips_per_speaker=(clips_per_speaker, 2),
            clip_seconds=(clip_seconds, 0.5), sample_rate=(sample_rate, 8000))
  args = dict(speakers=speakers, clips_per_speaker=clips_per_speaker, sample_rate=sample_rate,
              clip_seconds=clip_seconds, seed=seed)
  return build_once(root, "cough", args, lambda r: _build(r, progress=progress, **args))


def _build(root, *, speakers, clips_per_speaker, sample_rate, clip_seconds, seed, progress):
  (root / "audio").mkdir()
  rng = np.random.default_rng([seed, 61])
  names = list(dict.fromkeys(f"{h:08x}" for h in rng.integers(0, 2 ** 32, 4 * speakers)))
  f0 = 85 * 3 ** rng.random(speakers)  # 85-255 Hz; the vocal tract scales along with pitch
  voices = [(f, 0.95 + 0.25 * np.log(f / 85) / np.log(3) + rng.normal(0, 0.03)) for f in f0]
  order, k = rng.permutation(speakers), max(1, int(round(0.15 * speakers)))
  split = {int(i): "validation" for i in order[:k]} | {int(i): "test" for i in order[k:2 * k]}
  n, rows = int(round(clip_seconds * sample_rate)), []
  counts = {s: {"cough": 0, "other": 0} for s in ("train", "validation", "test")}
  bar = tqdm(total=speakers * clips_per_speaker, desc="synthetic cough", disable=not progress)
  for spk in range(speakers):
    part = split.get(spk, "train")
    for j in range(clips_per_speaker):
      clip_rng = np.random.default_rng([seed, 62, spk, j])
      kind = "cough" if j % 2 == 0 else OTHERS[clip_rng.integers(len(OTHERS))]
      label = "cough" if kind == "cough" else "other"
      rel = f"audio/{names[spk]}_{j}.wav"
      x = clip(kind, voices[spk], clip_rng, n, sample_rate)
      write_wav(root / rel, sounds.finish(x, clip_rng), sample_rate)
      rows.append(f"{rel},{LABELS[label]},{part}\n")
      counts[part][label] += 1
      bar.update()
  bar.close()
  (root / "cough.csv").write_text("path,label,split\n" + "".join(sorted(rows)))
  return {"paths": {"manifest": "cough.csv", "audio": "audio"}, "labels": dict(LABELS),
          "clips": counts, "speakers": speakers, "sample_rate": sample_rate,
          "clip_seconds": clip_seconds}
