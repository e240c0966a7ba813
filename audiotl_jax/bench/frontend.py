"""`audiotl bench --only frontend`: the jitted log-mel frontend against librosa, in clips/s."""
import jax
import jax.numpy as jnp
import numpy as np

from audiotl_jax.bench import timing
from audiotl_jax.features import logmel

# The frontend every CNN bench uses (train_step, pipeline): AudioSet-style 64-bin log-mel at 16 kHz.
FRONTEND = dict(sample_rate=16000, n_fft=400, hop_length=160, n_mels=64, fmin=50.0, fmax=8000.0)


def bench_frontend(workdir, quick: bool) -> list[dict]:
  import librosa  # Only this bench compares against it.
  n, clip_seconds = (8, 1.0) if quick else (64, 10.0)
  sr = FRONTEND["sample_rate"]
  audio = np.random.default_rng(0).standard_normal((n, int(clip_seconds * sr))).astype(np.float32)
  audio *= 0.1
  kw = {k: FRONTEND[k] for k in ("n_fft", "hop_length", "n_mels", "fmin", "fmax")}
  fn = jax.jit(lambda x: logmel.log_mel(x, sr, **kw))
  x = jnp.asarray(audio)
  fn(x).block_until_ready()
  sec_jax = timing.measure(lambda: fn(x).block_until_ready(), 3 if quick else 10).median

  def lib():
    for clip in audio:
      librosa.power_to_db(librosa.feature.melspectrogram(y=clip, sr=sr, **kw), ref=1.0,
                          top_db=None)

  lib()
  sec_lib = timing.measure(lib, 1 if quick else 3).median
  return [{"bench": "frontend", "impl": "jax log_mel (jit)", "clips": n,
           "clip_seconds": clip_seconds, "clips_per_s": n / sec_jax},
          {"bench": "frontend", "impl": "librosa melspectrogram + power_to_db", "clips": n,
           "clip_seconds": clip_seconds, "clips_per_s": n / sec_lib}]
