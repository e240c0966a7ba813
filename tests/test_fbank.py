"""Kaldi fbank against torchaudio's (committed reference arrays), AST padding and normalisation."""
from pathlib import Path

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from audiotl_jax.errors import UserError
from audiotl_jax.features import fbank
from audiotl_jax.features import featurizer
from audiotl_jax.features import logmel as frontend
from audiotl_jax.features import normalization
from audiotl_jax.stages.stats import dataset_stats

DATA = Path(__file__).resolve().parent / "data"


def _wave(name):
  return frontend.pcm_to_float(jnp.asarray(np.load(DATA / f"fbank_wave_{name}.npy")[None]))


@pytest.mark.parametrize("name", ["a", "b"])
def test_matches_torchaudio_kaldi_fbank(name):
  # References: torchaudio.compliance.kaldi.fbank as AST's dataloader calls it
  # (tests/data/make_fbank_golden.py). Measured max error 5e-4 on a log energy of up to ~10.
  ref = np.load(DATA / f"fbank_ref_{name}.npy")
  got = np.asarray(fbank.fbank(_wave(name)))[0]
  assert got.shape == ref.shape
  np.testing.assert_allclose(got, ref, atol=2e-3, rtol=0)
  assert np.abs(got - ref).mean() < 1e-4


def test_ast_padding_then_normalisation_matches_reference():
  ref = np.load(DATA / "fbank_ast_b.npy")
  got = np.asarray(fbank.ast_features(_wave("b"), target_frames=128))[0]
  assert got.shape == (128, 128)
  np.testing.assert_allclose(got, ref, atol=1e-3, rtol=0)
  # Padding happens before normalising: padded frames hold -mean / (2 std).
  np.testing.assert_allclose(got[-1], 4.2677393 / (2 * 4.5689974), rtol=1e-6)


def test_frame_counts_crop_and_short_clips():
  assert fbank.num_frames(16000) == 98 and fbank.num_frames(160000) == 998
  assert fbank.num_frames(100) == 1
  assert fbank.frame_sizes(16000) == (400, 160, 512)
  x = jnp.zeros((2, 16000))
  assert fbank.ast_features(x, target_frames=50).shape == (2, 50, 128)
  assert fbank.fbank(jnp.ones((1, 100)) * 0.1, num_mel_bins=64).shape == (1, 1, 64)
  cfg = ml_collections.ConfigDict(dict(kind="fbank", sample_rate=16000, target_frames=0,
                                       hop_length=160))
  assert featurizer.feature_frames(cfg, 16000) == 98
  cfg.target_frames = 1024
  assert featurizer.feature_frames(cfg, 16000) == 1024
  cfg.kind = "logmel"
  assert featurizer.feature_frames(cfg, 16000) == 101


def test_mel_banks_are_kaldi_triangles():
  banks = fbank.mel_banks(128, 512, 16000)
  assert banks.shape == (128, 257)
  assert np.all(banks[:, -1] == 0) and np.all(banks >= 0) and banks.max() <= 1.0
  # The filters' peaks rise monotonically (the narrowest low ones may miss every FFT bin, as in
  # Kaldi with 128 bins on a 512-point FFT).
  live = banks.max(axis=1) > 0
  assert live[64:].all() and np.all(np.diff(np.argmax(banks[live], axis=1)) >= 0)
  with pytest.raises(UserError, match="low_freq"):
    fbank.mel_banks(128, 512, 16000, low_freq=9000.0)


def test_featurizer_fbank_kind_uses_fixed_statistics():
  from audiotl_jax.train import step as steps
  from configs import common
  fc = common.frontend(kind="fbank")
  fc.target_frames = 128
  assert fc.n_mels == 128
  norm = steps.compute_norm(fc, iter(()), None, 0)
  assert norm == {"mean": -4.2677393, "std": 4.5689974}
  pcm = jnp.asarray(np.load(DATA / "fbank_wave_b.npy")[None])
  got = np.asarray(featurizer.make_featurizer(fc, norm)(pcm))[0]
  np.testing.assert_allclose(got, np.load(DATA / "fbank_ast_b.npy"), atol=1e-3, rtol=0)
  with pytest.raises(UserError, match="positive std"):
    normalization.normalize(jnp.zeros((1, 2, 2)), 0.0, 0.0)


def test_stats_command(prepared, capsys):
  from audiotl_jax import cli as main
  assert main.main(["stats", "--data", str(prepared["speech_commands"]), "--target-frames",
                    "100", "--mel-bins", "32"]) == 0
  out = capsys.readouterr().out
  assert "--config.frontend.fbank_mean=" in out and "--config.frontend.fbank_std=" in out
  stats = dataset_stats(prepared["speech_commands"], target_frames=100, num_mel_bins=32)
  assert stats["std"] > 0 and np.isfinite(stats["mean"])
  assert f"fbank mean {stats['mean']:.7f}" in out
  with pytest.raises(UserError, match="split 'nope'"):
    dataset_stats(prepared["speech_commands"], split="nope")
