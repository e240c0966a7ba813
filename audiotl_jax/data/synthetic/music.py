"""Synthetic GTZAN (Tzanetakis & Cook 2002): ten genres of the Music family, in its layout.

A genre's harmonic layer is its AudioSet namesake's (`catalog`: "Jazz", "Heavy metal", ...), so
pre-training on synthetic AudioSet's music classes transfers; its tempo, swing, drum pattern,
bass and distortion come from a table of per-genre styles below, so genres also differ in rhythm,
as real ones do.
"""
import numpy as np
from scipy import signal
from tqdm import tqdm

from audiotl_jax.data.synthetic import catalog, sounds
from audiotl_jax.data.synthetic.writing import build_once, check_min, write_wav
from audiotl_jax.errors import unknown_name

GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae",
          "rock")
# genre: (AudioSet class, bpm range, swing (how far the off-beat eighth lags, in eighths), notes
# per beat of the harmonic layer, drive (distortion), bass level, drum level, then the drum
# pattern over one bar of 16 steps for kick, snare and hi-hat/ride: "x" full, "o" soft).
STYLES = {
    "blues": ("Blues", (70, 95), 0.33, 1, 1.5, 0.8, 0.5,
              "x.....x.x.......", "....x.......x...", "x.ox.ox.x.ox.ox."),
    "classical": ("Classical music", (60, 100), 0.0, 1, 1.0, 0.0, 0.0, "", "", ""),
    "country": ("Country", (100, 130), 0.0, 2, 1.0, 0.7, 0.6,
                "x.......x.......", "..o.x.o...o.x.o.", "x.x.x.x.x.x.x.x."),
    "disco": ("Disco", (110, 130), 0.0, 2, 1.0, 0.9, 0.9,
              "x...x...x...x...", "....x.......x...", "o.x.o.x.o.x.o.x."),
    "hiphop": ("Hip hop music", (80, 100), 0.2, 1, 1.0, 1.2, 1.0,
               "x......x..x.....", "....x.......x...", "x.x.x.x.x.x.x.x."),
    "jazz": ("Jazz", (110, 180), 0.33, 2, 1.0, 0.8, 0.35,
             "o...............", "......o.....o...", "x..ox..ox..ox..o"),
    "metal": ("Heavy metal", (150, 190), 0.0, 4, 8.0, 0.8, 0.8,
              "xxxxxxxxxxxxxxxx", "....x.......x...", "x.x.x.x.x.x.x.x."),
    "pop": ("Pop music", (95, 125), 0.0, 2, 1.3, 0.8, 0.6,
            "x.......x.x.....", "....x.......x...", "x.x.x.x.x.x.x.x."),
    "reggae": ("Reggae", (65, 85), 0.1, 2, 1.0, 1.0, 0.7,
               "........x.......", "........x.......", "..x...x...x...x."),
    "rock": ("Rock music", (100, 140), 0.0, 2, 4.0, 0.8, 0.7,
             "x.....x.x.......", "....x.......x...", "x.x.x.x.x.x.x.x."),
}


def _drums(rng, sr):
  """A kit for one clip: a pitch-swept kick, a noisy snare with a body, a short bright hat."""
  t = np.arange(int(0.2 * sr)) / sr
  f = 45 + 100 * np.exp(-t / 0.03)
  kick = np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-t / rng.uniform(0.05, 0.09))
  band = signal.butter(2, [1000, min(6000, 0.4 * sr)], "bandpass", fs=sr, output="sos")
  snare = (signal.sosfilt(band, rng.standard_normal(t.size)) * np.exp(-t / 0.05)
           + 0.5 * np.sin(2 * np.pi * 185 * t) * np.exp(-t / 0.03))
  th = t[:int(0.06 * sr)]
  hat = signal.sosfilt(signal.butter(2, 0.3 * sr, "highpass", fs=sr, output="sos"),
                       rng.standard_normal(th.size)) * np.exp(-th / 0.012)
  return [sounds.unit(s) for s in (kick, snare, hat)]


def _hits(steps, pattern, swing, step, start, rng, n, sr):
  """(sample index, velocity) where a bar pattern hits, over the clip from phase `start` (s)."""
  out = []
  for k in range(steps if pattern else 0):
    hit = pattern[k % 16]
    if hit == ".":
      continue
    # Swing delays the off-beat eighth (steps 2, 6, 10, 14 of the bar).
    at = k * step - start + (swing * 2 * step if k % 4 == 2 else 0.0)
    if 0 <= at < n / sr:
      out.append((int(at * sr), (1.0 if hit == "x" else 0.4) * rng.uniform(0.8, 1.0)))
  return out


def genre_clip(genre, rng, n, sr):
  """One clip of a genre: the harmonic layer at the genre's tempo, bass, drums, distortion."""
  name, (lo, hi), swing, per_beat, drive, bass_level, drum_level, *kit = STYLES[genre]
  bpm = rng.uniform(lo, hi)
  step = 60 / bpm / 4  # a sixteenth note
  u = catalog.params(name)
  u[4] = np.clip((bpm / 60 * per_beat - 1) / 4, 0, 1)  # harmonic()'s note rate is 1 + 4 u[4]
  x = sounds.unit(sounds.harmonic(u, rng, n, sr))
  start = rng.uniform(0, 16 * step)  # the clip starts anywhere in the bar
  steps = int(np.ceil((n / sr + start) / step)) + 1
  if bass_level:
    t = np.arange(n) / sr
    tonic = 55 * 2 ** (rng.integers(0, 12) / 12)
    beat = np.floor((t + start) / (4 * step))
    pitch = tonic * np.where(beat % 4 == 3, 1.5, 1.0)  # tonic on three beats, the fifth on the last
    since = (t + start) % (4 * step)
    bass = np.sin(2 * np.pi * np.cumsum(pitch) / sr) * np.exp(-since / (3 * step))
    x += bass_level * sounds.unit(bass + 0.3 * bass ** 2)
  if drum_level:
    drums = np.zeros(n)
    for sample, pattern in zip(_drums(rng, sr), kit):
      for i, velocity in _hits(steps, pattern, swing, step, start, rng, n, sr):
        drums[i:i + sample.size] += velocity * sample[:n - i]
    x += drum_level * sounds.unit(drums)
  if drive > 1:
    x = np.tanh(drive * x / np.max(np.abs(x))) / np.tanh(drive)
  return x


def make_gtzan(root, *, genres=GENRES, clips_per_genre=100, sample_rate=16000,
               clip_seconds=3.0, seed=0, progress=False) -> dict:
  """Writes the GTZAN layout: root/genres/<genre>/<genre>.<NNNNN>.wav (the Kaggle copy's names).

  The real set is 100 clips of 30 s per genre at 22,050 Hz; every size is a parameter here.
  """
  check_min(genres=(len(genres), 2), clips_per_genre=(clips_per_genre, 1),
            clip_seconds=(clip_seconds, 0.5), sample_rate=(sample_rate, 8000))
  for g in genres:
    if g not in STYLES:
      raise unknown_name("synthetic GTZAN genre", g, STYLES)
  args = dict(genres=list(genres), clips_per_genre=clips_per_genre, sample_rate=sample_rate,
              clip_seconds=clip_seconds, seed=seed)
  return build_once(root, "gtzan", args, lambda r: _build(r, progress=progress, **args))


def _build(root, *, genres, clips_per_genre, sample_rate, clip_seconds, seed, progress):
  n = int(round(clip_seconds * sample_rate))
  bar = tqdm(total=len(genres) * clips_per_genre, desc="synthetic GTZAN", disable=not progress)
  for g in genres:
    folder = root / "genres" / g
    folder.mkdir(parents=True)
    for i in range(clips_per_genre):
      rng = np.random.default_rng([seed, 31, GENRES.index(g), i])
      write_wav(folder / f"{g}.{i:05d}.wav", sounds.finish(genre_clip(g, rng, n, sample_rate), rng),
                sample_rate)
      bar.update()
  bar.close()
  return {"paths": {"genres": "genres"}, "genres": list(genres),
          "clips": len(genres) * clips_per_genre, "sample_rate": sample_rate,
          "clip_seconds": clip_seconds}
