"""Makes the fbank reference arrays of tests/test_fbank.py with torchaudio (run once; committed).

torchaudio is not a dependency of audiotl-jax: run this where it is installed, e.g.

    python3.11 -m venv /tmp/ta && /tmp/ta/bin/pip install torch==2.9.1 'torchaudio==2.9.*' numpy
    /tmp/ta/bin/python tests/data/make_fbank_golden.py

It writes, beside itself, for two deterministic int16 clips (a chirp in noise, 1 s; a pulse
train, 0.37 s): `fbank_wave_{a,b}.npy` (int16 PCM), `fbank_ref_{a,b}.npy` (the Kaldi fbank as
AST's dataloader computes it) and `fbank_ast_b.npy` (clip b padded to 128 frames and normalised
with AudioSet's statistics, as AST feeds its model).
"""
from pathlib import Path

import numpy as np
import torch
import torchaudio

HERE = Path(__file__).resolve().parent
SR = 16000


def clips():
  rng = np.random.default_rng(1234)
  t = np.arange(SR) / SR
  a = 0.3 * np.sin(2 * np.pi * (200 + 1800 * t) * t) + 0.05 * rng.standard_normal(SR)
  n = int(0.37 * SR)
  b = np.zeros(n)
  b[::97] = 0.8                                              # a 165 Hz pulse train
  b = np.convolve(b, np.exp(-np.arange(200) / 30.0) * np.sin(np.arange(200) * 0.3))[:n]
  b += 0.01 * rng.standard_normal(n) + 0.02                  # noise and a DC offset
  to16 = lambda x: np.clip(np.round(x * 32768), -32768, 32767).astype(np.int16)
  return {"a": to16(a), "b": to16(b)}


def ast_fbank(pcm: np.ndarray) -> torch.Tensor:
  """AST's dataloader: torchaudio.load scale, mean removed, Kaldi fbank."""
  waveform = torch.from_numpy(pcm.astype(np.float32) / 32768.0)[None]
  waveform = waveform - waveform.mean()
  return torchaudio.compliance.kaldi.fbank(
      waveform, htk_compat=True, sample_frequency=SR, use_energy=False, window_type="hanning",
      num_mel_bins=128, dither=0.0, frame_shift=10)


def main():
  for name, pcm in clips().items():
    np.save(HERE / f"fbank_wave_{name}.npy", pcm)
    np.save(HERE / f"fbank_ref_{name}.npy", ast_fbank(pcm).numpy().astype(np.float32))
  f = ast_fbank(clips()["b"])
  f = torch.nn.ZeroPad2d((0, 0, 0, 128 - f.shape[0]))(f)   # AST pads first ...
  f = (f - (-4.2677393)) / (4.5689974 * 2)                  # ... then normalises.
  np.save(HERE / "fbank_ast_b.npy", f.numpy().astype(np.float32))
  print(f"torchaudio {torchaudio.__version__}: wrote the fbank reference arrays to {HERE}")


if __name__ == "__main__":
  main()
