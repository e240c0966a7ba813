"""The acoustic families of the synthetic default, one function per AudioSet branch.

Each family turns a class's parameter vector `u` (values in [0, 1], set by the class's place in the
ontology) and a per-clip rng into `n` samples at `sr`: harmonic tones for Music, chirps and FM
sweeps for Animal, glottal pulse trains through formant filters for Human sounds (and spoken
words), filtered noise textures for Natural sounds, impacts on damped resonators for Sounds of
things, broadband noise and tones for the rest. `audioset.py` and `downstream.py` beside this file write them out in dataset layouts.
"""
import numpy as np
from scipy import signal

DIMS = 6  # parameters per class, each in [0, 1]; every family reads them its own way
VOWELS = {"iy": (270, 2290, 3010), "ih": (390, 1990, 2550), "eh": (530, 1840, 2480),
           "ae": (660, 1720, 2410), "aa": (730, 1090, 2440), "ao": (570, 840, 2410),
           "uh": (440, 1020, 2240), "uw": (300, 870, 2240), "ah": (640, 1190, 2390),
           "er": (490, 1350, 1690)}
FRICATIVES = {"s": 6000.0, "sh": 3000.0, "f": 4500.0, "h": 1500.0}  # noise-band centres in Hz
# Differentiated glottal flow: a double real pole at 0.97 (-12 dB/octave source) and a zero at DC.
GLOTTAL = np.array([[1.0, -1.0, 0.0, 1.0, -1.94, 0.9409]])


def unit(x):
  return x / (np.sqrt(np.mean(x * x)) + 1e-12)


def reson(freqs, bws, sr):
  """Two-pole resonators as sos rows: a cascade is a formant filter, a parallel sum a modal body."""
  f = np.minimum(np.asarray(freqs, float), 0.45 * sr)
  r = np.exp(-np.pi * np.asarray(bws, float) / sr)
  sos = np.zeros((f.size, 6))
  sos[:, 0], sos[:, 3] = 1 - r, 1.0
  sos[:, 4], sos[:, 5] = -2 * r * np.cos(2 * np.pi * f / sr), r * r
  return sos


def ramps(length, sr, ms=15.0):
  # Smooth edges, so voiced units do not click and look impulsive.
  env, k = np.ones(length), min(length // 2, int(sr * ms / 1000))
  if k:
    env[:k] = 0.5 - 0.5 * np.cos(np.pi * np.arange(k) / k)
    env[length - k:] = env[:k][::-1]
  return env


def utter(n, sr, rng, f0, units, breath=0.05):
  """Phoneme-like units: (start s, length s, "v" | "f", formants | band centre Hz, gain).

  "v" units are the glottal pulse train (pitch track f0, one value per sample) through a cascade
  of formant resonators; "f" units are a noise band (fricatives, breath).
  """
  phase = np.cumsum(f0 * (1 + 0.02 * rng.standard_normal(n))) / sr  # pitch jitter
  exc = unit(signal.sosfilt(GLOTTAL, np.diff(np.floor(phase), prepend=0.0)))
  exc += breath * rng.standard_normal(n)
  noise, out, tail = rng.standard_normal(n), np.zeros(n), int(0.03 * sr)
  for start, length, kind, value, gain in units:
    a = int(start * sr)
    b = min(n, a + int(length * sr))
    if b - a < 16:
      continue
    seg = np.zeros(min(n, b + tail) - a)  # room for the filter's ring-out
    if kind == "v":
      seg[:b - a] = exc[a:b] * ramps(b - a, sr)
      sos = reson(value, 50 + 0.06 * np.asarray(value), sr)
    else:
      seg[:b - a] = noise[a:b] * ramps(b - a, sr, 8)
      sos = reson([value, value], [0.4 * value] * 2, sr)
    out[a:a + seg.size] += gain * unit(signal.sosfilt(sos, seg))
  return out


def vocal(u, rng, n, sr):
  """Human sounds: syllables of a glottal pulse train through formant filters.

  The class sets what is said: two vowels that alternate (formants from u[1], u[2] and u[4]), a
  fricative onset (how often from u[4], its band from u[5]) and the syllable rate (u[3]). Who says
  it varies per clip, as real vocalisations come from many people: pitch, vocal-tract size (which
  scales every formant) and pitch movement are the speaker's, not the class's.
  """
  t = np.arange(n) / sr
  rate = 2 + 5 * u[3]  # syllables per second
  f0 = 85 * 3 ** rng.random()  # 85-255 Hz, as the spoken words' speakers
  size = 0.95 + 0.25 * np.log(f0 / 85) / np.log(3) + rng.normal(0, 0.03)
  f0 = f0 * 2 ** (rng.uniform(1, 5) / 12 * np.sin(np.pi * rate * t + rng.uniform(0, 2 * np.pi)))
  first = np.array([280 + 600 * u[1], 850 + 1500 * u[2], 2400 + 600 * u[4]])
  second = np.array([280 + 600 * (1 - u[2]), 850 + 1500 * u[1], 2400 + 600 * (1 - u[4])])
  units, s, k = [], rng.uniform(0, 0.5 / rate), int(rng.integers(2))
  while s < n / sr:
    if rng.random() < 0.6 * u[4]:  # a consonant before the vowel
      units.append((s, 0.05, "f", size * (1500 + 5000 * u[5]), 0.3))
      s += 0.04
    formants = (first, second)[k % 2] * size
    units.append((s, rng.uniform(0.5, 0.85) / rate, "v",
                  formants * np.exp(0.03 * rng.standard_normal(3)), rng.uniform(0.6, 1.0)))
    s, k = s + rng.uniform(0.85, 1.15) / rate, k + 1
  return utter(n, sr, rng, f0, units, breath=0.02 + 0.3 * u[4])


def harmonic(u, rng, n, sr):
  """Music: notes and chords of stacked partials, vibrato, plucked-to-sustained envelopes."""
  t = np.arange(n) / sr
  rate = 1 + 4 * u[4]  # notes per second
  onsets = np.arange(rng.uniform(0, 0.3 / rate), n / sr, 1 / rate)
  steps = rng.choice([-5, -3, 0, 2, 4, 7, 9, 12], onsets.size)  # a pentatonic walk
  note = np.maximum(np.searchsorted(onsets, t, side="right") - 1, 0)
  since, until = t - onsets[note], np.append(onsets[1:], np.inf)[note] - t
  env = ((since >= 0) * (1 - np.exp(-np.abs(since) / 0.01)) * (1 - np.exp(-until / 0.005))
         * np.exp(-np.abs(since) / (0.1 + 1.2 * (1 - u[4]))))
  vibrato = 1 + (0.002 + 0.012 * u[3]) * np.sin(2 * np.pi * (4 + 3 * u[3]) * t)
  base = 110 * 2 ** (3 * u[0] + rng.normal(0, 1 / 12)) * 2 ** (steps[note] / 12) * vibrato
  phase = 2 * np.pi * np.cumsum(base) / sr
  k = np.arange(1, 4 + int(6 * u[1]))
  x = np.zeros(n)
  for ratio in (1.0, 2 ** (4 / 12), 2 ** (7 / 12))[:1 + int(2.99 * u[5])]:  # chord voices
    # sin(k p) by the Chebyshev recurrence: two trig calls per voice instead of one per partial.
    s1, c2 = np.sin(ratio * phase), 2 * np.cos(ratio * phase)
    prev, cur = np.zeros(n), s1
    for kk in k[k * base.max() * ratio < 0.45 * sr]:
      x += kk ** -(0.5 + 1.5 * u[2]) * cur
      prev, cur = cur, c2 * cur - prev
  return x * env


def chirps(u, rng, n, sr):
  """Animal: trains of FM chirps (bird-like trills), pulsed low calls (frog-like) when u[4]>.5."""
  t = np.arange(n) / sr
  fc = min(400 * 2 ** (4 * u[0] + 0.05 * rng.standard_normal()), 0.35 * sr)
  span, length = 3 * (u[1] - 0.5), 0.015 + 0.15 * u[2]  # octaves swept (sign: direction), s
  period = max(1 / (3 + 22 * u[3]), 1.2 * length)
  onsets = np.arange(rng.uniform(0, period), n / sr, period)
  onsets += rng.uniform(0, 0.1 * period, onsets.size)
  keep = ((onsets / 0.6 + rng.random()) % 1) < 0.3 + 0.7 * u[5]  # calls come in bouts
  keep[0] = True
  idx = np.searchsorted(onsets, t, side="right") - 1
  tau = t - onsets[np.maximum(idx, 0)]
  inside = (idx >= 0) & (tau < length) & keep[np.maximum(idx, 0)]
  centre = (fc * np.exp(0.05 * rng.standard_normal(onsets.size)))[np.maximum(idx, 0)]
  freq = np.minimum(np.where(inside, centre * 2 ** (span * (tau / length - 0.5)), fc), 0.45 * sr)
  phase = 2 * np.pi * np.cumsum(freq) / sr
  x = np.where(inside, np.sin(np.pi * tau / length) ** 2, 0.0)
  x *= np.sin(phase) + 0.3 * u[5] * np.sin(2 * phase)
  if u[4] > 0.5:
    x *= (0.5 + 0.5 * np.sin(2 * np.pi * (15 + 120 * (u[4] - 0.5)) * t)) ** 2
  return x


def texture(u, rng, n, sr):
  """Natural sounds: coloured noise with a broad spectral bump, slow swells and sparse drops."""
  t = np.arange(n) / sr
  white = rng.standard_normal(n)
  white += 10 * (rng.random(n) < 200 * u[5] ** 2 / sr) * rng.standard_normal(n)  # drops
  f = np.fft.rfftfreq(n, 1 / sr)
  f[0] = f[1]
  centre = 150 * 2 ** (5.3 * u[1] + 0.1 * rng.standard_normal())
  bump = np.exp(-0.5 * (np.log2(f / centre) / (0.5 + 2 * u[2])) ** 2)
  gain = f ** (-0.7 * u[0]) * (1 + 15 * bump)
  x = np.fft.irfft(np.fft.rfft(white) * gain, n)
  swell = 1 + (0.2 + 0.6 * u[4]) * np.sin(2 * np.pi * (0.2 + 3 * u[3]) * t + rng.uniform(0, 6.3))
  return x * swell


def impacts(u, rng, n, sr):
  """Sounds of things: impacts, or engine-like periodic bursts when u[0]>.5, on modal bodies."""
  dur = n / sr
  if u[0] > 0.5:
    rate = 8 + 50 * u[1]
    times = np.arange(rng.uniform(0, 1 / rate), dur, 1 / rate)
    times += rng.normal(0, 0.03 / rate, times.size)
  else:
    times = rng.uniform(0, dur, 1 + rng.poisson((1 + 8 * u[1]) * dur))
  exc = np.zeros(n)
  np.add.at(exc, np.clip((times * sr).astype(int), 0, n - 1), rng.uniform(0.3, 1, times.size))
  burst_len = 1 + int(sr * (0.0005 + 0.004 * u[5]))
  burst = rng.standard_normal(burst_len) * np.exp(-4 * np.arange(burst_len) / burst_len)
  exc = np.convolve(exc, burst)[:n]
  freqs = 200 * 2 ** (4.5 * u[2] + 0.03 * rng.standard_normal()) * (
      1 + np.array([0.0, 1.76, 4.4]) * (0.4 + 0.8 * u[3]))  # inharmonic modes, bar to plate
  t60 = 0.02 + 0.5 * u[4]
  if u[0] > 0.5:
    t60 = min(t60, 2 / rate)
  x = 0.3 * unit(exc)
  for m, f in enumerate(freqs[freqs < 0.45 * sr]):
    x += 0.6 ** m * unit(signal.sosfilt(reson([f], [2.2 * (1 + m) / t60], sr), exc))
  return x


def broadband(u, rng, n, sr):
  """Source-ambiguous and channel sounds: gated broadband noise and plain sine tones."""
  t = np.arange(n) / sr
  noise = signal.lfilter([1.0], [1.0, -0.95 * u[2]], rng.standard_normal(n))
  gate = ((t * (0.5 + 6 * u[4]) + rng.random()) % 1) < 0.3 + 0.7 * u[1]
  tone = np.sin(2 * np.pi * 300 * 2 ** (4 * u[0]) * t + rng.uniform(0, 6.3))
  return ((1 - u[3]) * unit(noise) + u[3] * unit(tone)) * gate


FAMILIES = {"Human sounds": vocal, "Music": harmonic, "Animal": chirps,
             "Natural sounds": texture, "Sounds of things": impacts}


def finish(x, rng):
  """Adds a faint background and sets a random peak level below full scale (no clipping)."""
  bg = signal.lfilter([1.0], [1.0, -0.9], rng.standard_normal(x.size))
  x = unit(x) + 10 ** (rng.uniform(-50, -35) / 20) * unit(bg)
  return x * (rng.uniform(0.3, 0.9) / (np.max(np.abs(x)) + 1e-12))
