"""Synthetic TAU Urban Acoustic Scenes 2020 Mobile (DCASE 2020 Task 1A), development layout.

Scenes are built as `make_acoustic_scenes` builds them (Natural-sounds texture plus
Sounds-of-things events, a recipe per scene name, shifted per location), so the 2018 and 2020
tasks share their scenes. Each segment is then recorded by more than one device, each a fixed
frequency response, so device mismatch exists: device a (the reference microphone) records every
segment, as in the real set where it holds most of the data, and the others take turns.
"""
import zlib

import numpy as np
from scipy import signal
from tqdm import tqdm

from audiotl_jax.data.synthetic import sounds
from audiotl_jax.data.synthetic.downstream import DEFAULT_CITIES, DEFAULT_SCENES
from audiotl_jax.data.synthetic.writing import build_once, check_min, write_wav
from audiotl_jax.errors import UserError

# Real devices a (Soundman OKM II), b (Samsung Galaxy S7), c (iPhone SE); s1-s3 simulated ones.
DEVICES = ("a", "b", "c", "s1", "s2", "s3")


def scene_recipe(scene: str) -> np.ndarray:
  """2 * DIMS texture and event parameters plus an event level: make_acoustic_scenes' recipe."""
  return np.random.default_rng(zlib.crc32(scene.encode())).uniform(0.1, 0.9, 2 * sounds.DIMS + 1)


def scene_sound(recipe, u, rng, n, sr):
  """A scene clip as make_acoustic_scenes mixes it: texture plus events at the recipe's level."""
  d = sounds.DIMS
  return sounds.unit(sounds.texture(u[:d], rng, n, sr)) + (
      (0.2 + 0.8 * recipe[-1]) * sounds.unit(sounds.impacts(u[d:], rng, n, sr)))


def record(x, device: str, sr: int):
  """x as `device` hears it. Device a is flat; every other device is a fixed response drawn from
  its name: a high-pass (small phone microphones lose the bass), a low-pass, a resonant peak and
  some saturation, strong enough that a model trained mostly on a can tell them apart."""
  if device == "a":
    return x
  rng = np.random.default_rng(zlib.crc32(f"device:{device}".encode()))
  low, high = rng.uniform(150, 450), min(rng.uniform(0.25, 0.42) * sr, 7000.0)
  y = signal.sosfilt(signal.butter(2, low, "highpass", fs=sr, output="sos"), x)
  y = signal.sosfilt(signal.butter(4, high, "lowpass", fs=sr, output="sos"), y)
  b, a = signal.iirpeak(rng.uniform(800, min(4000, 0.4 * sr)), rng.uniform(1.5, 4), fs=sr)
  y = y + (10 ** (rng.uniform(4, 10) / 20) - 1) * signal.lfilter(b, a, y)
  drive = rng.uniform(1, 3)
  y = sounds.unit(y)
  return np.tanh(drive * y / 4) * 4 / drive


def make_dcase2020_task1a(root, *, scenes=DEFAULT_SCENES, cities=DEFAULT_CITIES[:3],
                          locations_per_city=1, segments_per_location=2, devices=DEVICES,
                          devices_per_segment=2, sample_rate=16000, clip_seconds=2.0, seed=0,
                          progress=False) -> dict:
  """Writes the TAU Urban Acoustic Scenes 2020 Mobile development layout.

  root/audio/<scene>-<city>-<location>-<segment>-<device>.wav, root/meta.csv (TAB: filename,
  scene_label, identifier, source_label = the device) and
  root/evaluation_setup/fold1_{train,evaluate,test}.csv. A location lies wholly in train or
  evaluate (~70/30 per scene, at least one each). Every segment is recorded by devices[0] and by
  devices_per_segment - 1 of the others in turn, the same sound through each device's response
  (`record`). The real set is 10 s at 44.1 kHz; sample_rate and clip_seconds are parameters.
  """
  check_min(scenes=(len(scenes), 2), cities=(len(cities), 1),
            locations=(len(cities) * locations_per_city, 2),
            segments_per_location=(segments_per_location, 1), devices=(len(devices), 1),
            devices_per_segment=(devices_per_segment, 1), clip_seconds=(clip_seconds, 0.5),
            sample_rate=(sample_rate, 8000))
  if devices_per_segment > len(devices) or len(set(devices)) != len(devices):
    raise UserError(f"synthetic DCASE 2020: devices must be distinct and at least "
                    f"devices_per_segment={devices_per_segment}, got {list(devices)}")
  args = dict(scenes=list(scenes), cities=list(cities), locations_per_city=locations_per_city,
              segments_per_location=segments_per_location, devices=list(devices),
              devices_per_segment=devices_per_segment, sample_rate=sample_rate,
              clip_seconds=clip_seconds, seed=seed)
  return build_once(root, "dcase2020_task1a", args,
                    lambda r: _build(r, progress=progress, **args))


def _build(root, *, scenes, cities, locations_per_city, segments_per_location, devices,
           devices_per_segment, sample_rate, clip_seconds, seed, progress):
  (root / "audio").mkdir()
  (root / "evaluation_setup").mkdir()
  n, next_location = int(round(clip_seconds * sample_rate)), {c: 0 for c in cities}
  meta, lists = [], {"train": [], "evaluate": []}
  others, turn = list(devices[1:]), 0
  per_device = dict.fromkeys(devices, 0)
  bar = tqdm(total=len(scenes) * len(cities) * locations_per_city * segments_per_location,
             desc="synthetic DCASE 2020 scenes", disable=not progress)
  for si, scene in enumerate(scenes):
    recipe = scene_recipe(scene)
    places = []  # (city, location id): ids run on per city across scenes, as in the real set
    for city in cities:
      for _ in range(locations_per_city):
        places.append((city, next_location[city]))
        next_location[city] += 1
    held_out = set(np.random.default_rng([seed, 21, si]).permutation(len(places))[
        :max(1, int(round(0.3 * len(places))))].tolist())
    for p, (city, loc) in enumerate(places):
      shift = np.random.default_rng([seed, 22, si, p]).normal(0, 0.05, 2 * sounds.DIMS)
      u = np.clip(recipe[:-1] + shift, 0, 1)
      for seg in range(segments_per_location):
        rng = np.random.default_rng([seed, 23, si, p, seg])
        x = scene_sound(recipe, u, rng, n, sample_rate)
        chosen = [devices[0]] + [others[(turn + k) % len(others)]
                                 for k in range(devices_per_segment - 1)]
        turn += devices_per_segment - 1
        for device in chosen:
          # Each device's copy gets its own level and background, as a separate recorder would.
          y = sounds.finish(record(x, device, sample_rate),
                            np.random.default_rng([seed, 24, si, p, seg, devices.index(device)]))
          name = f"audio/{scene}-{city}-{loc}-{seg}-{device}.wav"
          write_wav(root / name, y, sample_rate)
          meta.append(f"{name}\t{scene}\t{city}-{loc}\t{device}\n")
          lists["evaluate" if p in held_out else "train"].append(f"{name}\t{scene}\n")
          per_device[device] += 1
        bar.update()
  bar.close()
  setup = root / "evaluation_setup"
  (root / "meta.csv").write_text("filename\tscene_label\tidentifier\tsource_label\n"
                                 + "".join(sorted(meta)))
  for part, rows in lists.items():
    (setup / f"fold1_{part}.csv").write_text("filename\tscene_label\n" + "".join(sorted(rows)))
  (setup / "fold1_test.csv").write_text(
      "filename\n" + "".join(sorted(x.split("\t")[0] + "\n" for x in lists["evaluate"])))
  return {"paths": {"meta": "meta.csv", "train": "evaluation_setup/fold1_train.csv",
                    "evaluate": "evaluation_setup/fold1_evaluate.csv",
                    "test": "evaluation_setup/fold1_test.csv"},
          "scenes": list(scenes), "devices": per_device,
          "clips": {k: len(v) for k, v in lists.items()},
          "sample_rate": sample_rate, "clip_seconds": clip_seconds}
