"""Tests for audiotl_jax.frontend: librosa parity, sharding, SpecAugment, mixup, statistics."""
import inspect
import warnings

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from audiotl_jax import frontend
from audiotl_jax.errors import UserError


def _librosa_log_mel(waveforms, *, sample_rate, n_fft, hop_length, n_mels, fmin, fmax):
  """The reference: librosa 0.11 with its defaults, frames-major."""
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="n_fft=.* is too large")  # the short-signal case
    return np.stack([
        librosa.power_to_db(
            librosa.feature.melspectrogram(y=y, sr=sample_rate, n_fft=n_fft,
                                           hop_length=hop_length, n_mels=n_mels, fmin=fmin,
                                           fmax=fmax),
            ref=1.0, top_db=None).T for y in waveforms
    ])


def test_librosa_default_padding_is_zeros():
  # log_mel zero-pads; this pins the librosa default it mirrors.
  assert inspect.signature(librosa.stft).parameters["pad_mode"].default == "constant"


@pytest.mark.parametrize("sample_rate,n_fft,hop_length,n_mels,fmin,fmax,num_samples", [
    (16000, 400, 160, 64, 0.0, None, 16000),
    (16000, 512, 160, 80, 50.0, 7600.0, 16123),
    (32000, 1024, 320, 128, 20.0, None, 32000),
    (22050, 1024, 320, 96, 0.0, 8000.0, 11025),
    (16000, 400, 160, 40, 125.0, None, 399),  # shorter than one window
])
def test_log_mel_matches_librosa(sample_rate, n_fft, hop_length, n_mels, fmin, fmax, num_samples):
  rng = np.random.default_rng(n_fft + num_samples)
  waveforms = np.concatenate([
      0.1 * rng.standard_normal((2, num_samples)),
      rng.uniform(-1, 1, (1, num_samples)),
      np.zeros((1, num_samples)),  # silence: -100 dB on both sides
  ]).astype(np.float32)
  ours = np.asarray(frontend.log_mel(waveforms, sample_rate, n_fft, hop_length, n_mels, fmin,
                                     fmax))
  ref = _librosa_log_mel(waveforms, sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length,
                         n_mels=n_mels, fmin=fmin, fmax=fmax)
  assert ours.shape == ref.shape == (
      4, frontend.num_frames(num_samples, hop_length), n_mels)
  assert np.abs(ours - ref).max() <= 1e-3
  np.testing.assert_array_equal(ours[3], -100.0)


def test_window_and_filterbank_are_librosas_and_survive_a_damaged_disk_cache(tmp_path,
                                                                             monkeypatch):
  from audiotl_jax.features import logmel
  for n in (256, 400, 1024):
    np.testing.assert_allclose(logmel.hann(n), librosa.filters.get_window("hann", n, fftbins=True),
                               atol=1e-15)
  monkeypatch.setenv("AUDIOTL_MEL_CACHE", str(tmp_path / "mel"))
  want = librosa.filters.mel(sr=16000, n_fft=400, n_mels=40, fmin=50.0, fmax=7000.0,
                             norm="slaney", dtype=np.float64)

  def bank():
    logmel._mel_filterbank.cache_clear()  # the in-memory cache; the disk one stays
    return logmel._mel_filterbank(16000, 400, 40, 50.0, 7000.0)

  np.testing.assert_array_equal(bank(), want)  # made by librosa, then written
  (cached,) = (tmp_path / "mel").glob("*.npy")
  np.testing.assert_array_equal(np.load(cached), want)
  np.save(cached, np.zeros((40, 201)))  # read back from the disk, not librosa
  assert not bank().any()
  cached.write_bytes(cached.read_bytes()[:100])  # truncated: made again, rewritten
  np.testing.assert_array_equal(bank(), want)
  np.testing.assert_array_equal(np.load(cached), want)
  cached.unlink()

  def disk_full(*_):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(logmel.fileio, "write_bytes", disk_full)  # still librosa's numbers
  np.testing.assert_array_equal(bank(), want)
  assert not cached.exists()
  logmel._mel_filterbank.cache_clear()


def test_log_mel_dtypes_and_shapes():
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (3, 1000)), jnp.bfloat16)
  out = frontend.log_mel(x, 16000, 400, 160, 40)
  assert out.shape == (3, 1 + 1000 // 160, 40) and out.dtype == jnp.float32
  assert frontend.num_frames(16000, 160) == 101
  assert frontend.num_frames(159, 160) == 1


def test_log_mel_is_jittable_and_sharding_invariant(devices):
  mesh = jax.make_mesh((8,), ("data",))
  waveforms = 0.1 * np.random.default_rng(1).standard_normal((16, 8000)).astype(np.float32)
  step = jax.jit(lambda w: frontend.log_mel(w, 16000, 512, 160, 64, 20.0, None))
  unsharded = np.asarray(step(jnp.asarray(waveforms)))
  sharded_in = jax.device_put(waveforms, NamedSharding(mesh, P("data")))
  sharded_out = step(sharded_in)
  assert len(sharded_out.sharding.device_set) == 8
  np.testing.assert_allclose(np.asarray(sharded_out), unsharded, rtol=0, atol=1e-4)


@pytest.mark.parametrize("kwargs,message", [
    (dict(n_fft=401), "n_fft must be even"),
    (dict(hop_length=0), "hop_length"),
    (dict(n_mels=2.5), "n_mels"),
    (dict(fmin=9000.0), "fmin"),
    (dict(fmax=9000.0), "fmax"),
])
def test_log_mel_rejects_bad_arguments(kwargs, message):
  args = dict(sample_rate=16000, n_fft=400, hop_length=160, n_mels=40, fmin=0.0, fmax=None)
  args.update(kwargs)
  with pytest.raises(UserError, match=message):
    frontend.log_mel(jnp.zeros((2, 1000)), **args)


def test_log_mel_rejects_bad_waveforms():
  with pytest.raises(UserError, match="shape"):
    frontend.log_mel(jnp.zeros((1000,)), 16000, 400, 160, 40)
  with pytest.raises(UserError, match="pcm_to_float"):
    frontend.log_mel(jnp.zeros((2, 1000), jnp.int16), 16000, 400, 160, 40)


def test_pcm_to_float():
  pcm = jnp.asarray([-32768, -16384, 0, 16384, 32767], jnp.int16)
  out = frontend.pcm_to_float(pcm)
  assert out.dtype == jnp.float32
  np.testing.assert_array_equal(out, [-1.0, -0.5, 0.0, 0.5, 32767 / 32768])
  with pytest.raises(UserError, match="int16"):
    frontend.pcm_to_float(jnp.zeros(3, jnp.float32))


def _runs(mask_1d):
  """(start, length) of each run of True."""
  padded = np.concatenate([[False], mask_1d, [False]]).astype(int)
  edges = np.flatnonzero(np.diff(padded))
  return [(s, e - s) for s, e in zip(edges[::2], edges[1::2])]


_AUGMENT = dict(freq_masks=2, freq_width=6, time_masks=3, time_width=5, mask_value=-7.0)


def _augment_input():
  return jnp.asarray(np.random.default_rng(2).uniform(1, 2, (64, 50, 40)), jnp.float32)


def test_spec_augment_masks_whole_bands_within_bounds():
  features = _augment_input()
  out = np.asarray(frontend.spec_augment(jax.random.key(0), features, **_AUGMENT))
  assert out.shape == features.shape and out.dtype == np.float32
  masked = out == -7.0
  np.testing.assert_array_equal(out[~masked], np.asarray(features)[~masked])
  for example in masked:
    freq = example.all(axis=0)  # bins masked in every frame
    time = example.all(axis=1)  # frames masked in every bin
    # Masked cells are exactly the union of full-height bands and full-width spans ...
    np.testing.assert_array_equal(example, freq[None, :] | time[:, None])
    # ... at most `masks` bands, none wider than masks * width (overlaps merge).
    assert len(_runs(freq)) <= 2 and freq.sum() <= 2 * 6
    assert len(_runs(time)) <= 3 and time.sum() <= 3 * 5
  per_example = masked.reshape(len(masked), -1)
  assert per_example.any(axis=1).mean() > 0.5  # masks do happen ...
  assert len({row.tobytes() for row in per_example}) > len(masked) // 2  # ... independently


def test_spec_augment_is_a_pure_function_of_rng():
  features = _augment_input()  # same shapes and settings as above: no recompilation
  a = frontend.spec_augment(jax.random.key(1), features, **_AUGMENT)
  b = frontend.spec_augment(jax.random.key(1), features, **_AUGMENT)
  c = frontend.spec_augment(jax.random.key(2), features, **_AUGMENT)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_spec_augment_width_larger_than_axis_and_no_masks():
  features = jnp.ones((8, 5, 3))
  out = frontend.spec_augment(jax.random.key(3), features, freq_width=10, time_width=10)
  assert out.shape == features.shape
  same = frontend.spec_augment(jax.random.key(3), features, freq_masks=0, time_masks=0)
  np.testing.assert_array_equal(same, features)
  with pytest.raises(UserError, match="time_width"):
    frontend.spec_augment(jax.random.key(3), features, time_width=-1)
  with pytest.raises(UserError, match="shape"):
    frontend.spec_augment(jax.random.key(3), jnp.ones((5, 3)))


def test_mixup_blends_x_and_y_with_one_lambda_and_partner():
  batch, classes = 32, 10
  labels = np.random.default_rng(4).integers(0, classes, batch)
  y = jax.nn.one_hot(labels, classes)
  # x repeats y along its trailing axis, so "same lambda and same partner, broadcast over x's
  # trailing axes" becomes an equality check.
  x = jnp.repeat(y, 3, axis=1)
  mixed_x, mixed_y = frontend.mixup(jax.random.key(5), x, y, alpha=0.4)
  assert mixed_x.shape == x.shape and mixed_x.dtype == x.dtype
  np.testing.assert_allclose(mixed_y.sum(axis=1), 1.0, atol=1e-6)  # label mass kept
  np.testing.assert_array_equal(mixed_x, jnp.repeat(mixed_y, 3, axis=1))
  mixed_y = np.asarray(mixed_y)
  assert not np.allclose(mixed_y, y) and (mixed_y >= 0).all()
  # Each row is lambda * (its own label) + (1 - lambda) * (one partner's label).
  assert ((mixed_y > 0).sum(axis=1) <= 2).all()
  assert (mixed_y[np.arange(batch), labels] > 0).all()


def test_mixup_on_a_sharded_batch_draws_without_collectives_in_a_loop(devices):
  """On a batch sharded over 8 CPU devices, the Beta draw's rejection loop must not be
  partitioned: with an all-reduce in its condition it raced the partner gather and deadlocked
  the train step about 1 run in 4. Same values as on one device."""
  from audiotl_jax.train import mesh as mesh_lib
  mesh = mesh_lib.make_mesh(8)
  rng = jax.random.PRNGKey(3)
  x = np.random.default_rng(0).standard_normal((16, 5, 4)).astype(np.float32)
  y = np.eye(4, dtype=np.float32)[np.arange(16) % 4]
  xs, ys = (jax.device_put(a, mesh_lib.batch_sharding(mesh)) for a in (x, y))
  rep = mesh_lib.replicated(mesh)
  fn = jax.jit(lambda r, a, b: frontend.mixup(r, a, b, alpha=0.4, replicated=rep))
  hlo = fn.lower(rng, xs, ys).compile().as_text()
  assert "pred[] all-reduce" not in hlo
  got = fn(rng, xs, ys)
  want = frontend.mixup(rng, x, y, alpha=0.4)
  for g, w in zip(got, want):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6, atol=1e-6)


def test_mixup_alpha_zero_is_identity():
  x = jnp.asarray(np.random.default_rng(7).standard_normal((4, 10)), jnp.float32)
  y = jax.nn.one_hot(jnp.arange(4), 4)
  mixed_x, mixed_y = frontend.mixup(jax.random.key(0), x, y, alpha=0.0)
  np.testing.assert_array_equal(mixed_x, x)
  np.testing.assert_array_equal(mixed_y, y)
  with pytest.raises(UserError, match="float"):
    frontend.mixup(jax.random.key(0), x, jnp.arange(4), alpha=0.2)


def test_feature_stats_and_normalize():
  features = np.random.default_rng(8).normal(-40.0, 12.0, (4, 50, 64)).astype(np.float32)
  mean, std = frontend.feature_stats(jnp.asarray(features))
  np.testing.assert_allclose(mean, features.astype(np.float64).mean(), rtol=1e-5)
  np.testing.assert_allclose(std, features.astype(np.float64).std(), rtol=1e-5)
  normalized = np.asarray(frontend.normalize(jnp.asarray(features), mean, std))
  np.testing.assert_allclose(normalized.mean(), 0.0, atol=1e-4)
  np.testing.assert_allclose(normalized.std(), 1.0, atol=1e-4)


def test_log_mel_pipeline_inside_one_jitted_step():
  # The way the train step wires it: PCM -> float -> log-mel -> normalise -> (mixup, tested
  # above) -> masks.
  @jax.jit
  def step(rng, pcm, mean, std):
    feats = frontend.log_mel(frontend.pcm_to_float(pcm), 16000, 400, 160, 40)
    feats = frontend.normalize(feats, mean, std)
    return frontend.spec_augment(rng, feats, freq_width=4, time_width=3)

  pcm = jnp.asarray(np.random.default_rng(9).integers(-3000, 3000, (8, 4000)), jnp.int16)
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # no librosa "empty filters" warning for this config
    mean, std = frontend.feature_stats(
        frontend.log_mel(frontend.pcm_to_float(pcm), 16000, 400, 160, 40))
    feats = step(jax.random.key(0), pcm, mean, std)
  assert feats.shape == (8, 26, 40)
  assert np.isfinite(np.asarray(feats)).all()
