"""PANNs against the official PyTorch code, through `.pth` files and `audiotl import`.

The reference modules below are written from pytorch/models.py (Cnn6, Cnn10, Cnn14, ConvBlock,
ConvBlock5x5) and torchlibrosa's Spectrogram / LogmelFilterBank (a conv1d STFT with DFT
kernels, reflect padding, the librosa mel matrix as `melW`), with the official state-dict keys.
Weights and BatchNorm statistics are random; the file is saved as `{'model': state_dict}` like
the released ones, imported, loaded as any checkpoint (its metadata's frontend) and run on the
same int16 waveform. Runs in `make test-torch`; fails, not skips, without torch.
"""
import librosa
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from audiotl_jax import cli
from audiotl_jax.errors import UserError
from audiotl_jax.stages import import_weights
from audiotl_jax.train import inference

pytestmark = pytest.mark.torch

SETUPS = {"32k": (32000, 1024, 320, 50, 14000), "16k": (16000, 512, 160, 50, 8000)}
# name -> (our variant, set-up, channels, convs per block, kernel, last block pools)
REFERENCES = {
    "cnn6": ("panns:cnn6", "32k", (64, 128, 256, 512), 1, 5, True),
    "cnn10": ("panns:cnn10", "32k", (64, 128, 256, 512), 2, 3, True),
    "cnn14": ("panns:cnn14", "32k", (64, 128, 256, 512, 1024, 2048), 2, 3, False),
    "cnn14_16k": ("panns:cnn14_16k", "16k", (64, 128, 256, 512, 1024, 2048), 2, 3, False),
}
EMBEDDING_RTOL = 1e-3   # relative to the largest embedding value
CLIPWISE_ATOL = 1e-3


class Stft(nn.Module):
  """torchlibrosa's STFT: conv1d with window * DFT kernels over the reflect-padded signal."""

  def __init__(self, n_fft, hop):
    super().__init__()
    self.n_fft, self.hop = n_fft, hop
    window = librosa.filters.get_window("hann", n_fft, fftbins=True)
    k, n = np.meshgrid(np.arange(n_fft), np.arange(n_fft))
    dft = np.power(np.exp(-2j * np.pi / n_fft), k * n)[:, :n_fft // 2 + 1] * window[:, None]
    self.conv_real = nn.Conv1d(1, n_fft // 2 + 1, n_fft, stride=hop, bias=False)
    self.conv_imag = nn.Conv1d(1, n_fft // 2 + 1, n_fft, stride=hop, bias=False)
    self.conv_real.weight.data = torch.tensor(dft.real.T[:, None, :], dtype=torch.float32)
    self.conv_imag.weight.data = torch.tensor(dft.imag.T[:, None, :], dtype=torch.float32)

  def forward(self, x):  # (batch, samples) -> real, imag (batch, 1, frames, bins)
    x = F.pad(x[:, None, :], (self.n_fft // 2, self.n_fft // 2), mode="reflect")
    return (self.conv_real(x)[:, None].transpose(2, 3), self.conv_imag(x)[:, None].transpose(2, 3))


class Spectrogram(nn.Module):
  def __init__(self, n_fft, hop):
    super().__init__()
    self.stft = Stft(n_fft, hop)

  def forward(self, x):
    real, imag = self.stft(x)
    return real ** 2 + imag ** 2


class LogmelFilterBank(nn.Module):
  def __init__(self, sr, n_fft, fmin, fmax, n_mels=64):
    super().__init__()
    mel = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax).T
    self.melW = nn.Parameter(torch.tensor(mel), requires_grad=False)

  def forward(self, x):
    return 10.0 * torch.log10(torch.clamp(torch.matmul(x, self.melW), min=1e-10))


class Block(nn.Module):
  """ConvBlock (two 3x3 convs) or ConvBlock5x5 (one), each conv followed by BN and ReLU."""

  def __init__(self, cin, cout, convs, kernel):
    super().__init__()
    self.convs = convs
    for i in range(1, convs + 1):
      setattr(self, f"conv{i}", nn.Conv2d(cin if i == 1 else cout, cout, kernel,
                                          padding=kernel // 2, bias=False))
      setattr(self, f"bn{i}", nn.BatchNorm2d(cout))

  def forward(self, x, pool):
    for i in range(1, self.convs + 1):
      x = F.relu_(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)))
    return F.avg_pool2d(x, kernel_size=2) if pool else x


class Panns(nn.Module):
  def __init__(self, setup, channels, convs, kernel, pool_last, classes=527):
    super().__init__()
    sr, n_fft, hop, fmin, fmax = SETUPS[setup]
    self.spectrogram_extractor = Spectrogram(n_fft, hop)
    self.logmel_extractor = LogmelFilterBank(sr, n_fft, fmin, fmax)
    self.bn0 = nn.BatchNorm2d(64)
    cins = (1,) + channels[:-1]
    for i, (cin, cout) in enumerate(zip(cins, channels)):
      setattr(self, f"conv_block{i + 1}", Block(cin, cout, convs, kernel))
    self.pool_last, self.num_blocks = pool_last, len(channels)
    self.fc1 = nn.Linear(channels[-1], channels[-1])
    self.fc_audioset = nn.Linear(channels[-1], classes)

  def forward(self, waveform):
    x = self.logmel_extractor(self.spectrogram_extractor(waveform))  # (batch, 1, frames, mels)
    x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
    for i in range(self.num_blocks):
      last = i == self.num_blocks - 1
      x = getattr(self, f"conv_block{i + 1}")(x, pool=self.pool_last or not last)
      x = F.dropout(x, p=0.2, training=self.training)
    x = torch.mean(x, dim=3)
    x = torch.max(x, dim=2)[0] + torch.mean(x, dim=2)
    x = F.dropout(x, p=0.5, training=self.training)
    x = F.relu_(self.fc1(x))
    return {"clipwise_output": torch.sigmoid(self.fc_audioset(x)), "embedding": x}


def _waveform(setup, seconds=3.0, batch=2, seed=0):
  """int16 audio: noise plus a chirp, so frames and mel bins differ."""
  sr = SETUPS[setup][0]
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * sr)) / sr
  chirp = np.sin(2 * np.pi * (200 + 1500 * t) * t)
  x = 0.3 * rng.standard_normal((batch, t.size)) * rng.uniform(0.1, 1, (batch, 1)) + 0.4 * chirp
  return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def _reference(name, audio, seed=0):
  """The reference network with random weights and calibrated, then perturbed, BN statistics."""
  _, setup, channels, convs, kernel, pool_last = REFERENCES[name]
  torch.manual_seed(seed)
  net = Panns(setup, channels, convs, kernel, pool_last)
  wave = torch.from_numpy(audio.astype(np.float32) / 32767.0)  # the official int16_to_float32
  # Running statistics from the data itself (cumulative average), so every layer sees roughly
  # normalised inputs; then perturbed, so a transposed or dropped statistic shows.
  bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
  for m in bns:
    m.reset_running_stats()
    m.momentum = None
  net.train()
  with torch.no_grad():
    net(wave)
    g = torch.Generator().manual_seed(seed + 1)
    for m in bns:
      c = m.num_features
      m.running_mean += 0.1 * torch.randn(c, generator=g) * m.running_var.sqrt()
      m.running_var *= 0.75 + 0.5 * torch.rand(c, generator=g)
      m.weight.copy_(0.75 + 0.5 * torch.rand(c, generator=g))
      m.bias.copy_(0.1 * torch.randn(c, generator=g))
    net.eval()
    ref = {k: v.numpy() for k, v in net(wave).items()}
  return net, ref


def _ours(workdir, audio):
  run = inference.load_for_inference(workdir)
  features = run.featurize(audio)
  logits, out = run.model.apply(run.variables, features, train=False)
  return run, {"clipwise_output": 1 / (1 + np.exp(-np.asarray(logits, np.float64))),
               "embedding": np.asarray(out["embedding"])}


def _compare(ref, got):
  emb_abs = np.abs(got["embedding"] - ref["embedding"]).max()
  emb_rel = emb_abs / np.abs(ref["embedding"]).max()
  clip_abs = np.abs(got["clipwise_output"] - ref["clipwise_output"]).max()
  return emb_abs, emb_rel, clip_abs


@pytest.mark.parametrize("name", list(REFERENCES))
def test_import_matches_the_official_modules(name, tmp_path):
  variant, setup = REFERENCES[name][:2]
  audio = _waveform(setup)
  net, ref = _reference(name, audio)
  torch.save({"iteration": 0, "model": net.state_dict()}, tmp_path / f"{name}.pth")
  del net
  if name == "cnn10":  # through the command line once
    cli.main(["import", "--weights", str(tmp_path / f"{name}.pth"), "--model", variant,
              "--workdir", str(tmp_path / "run")])
  else:
    import_weights.import_weights(tmp_path / f"{name}.pth", variant, tmp_path / "run")
  run, got = _ours(tmp_path / "run", audio)
  assert run.frontend.kind == "panns" and run.frontend.sample_rate == SETUPS[setup][0]
  assert run.metadata["num_classes"] == 527 and len(run.metadata["weights_sha256"]) == 64
  assert got["embedding"].shape == ref["embedding"].shape
  emb_abs, emb_rel, clip_abs = _compare(ref, got)
  print(f"\n{name}: embedding max abs {emb_abs:.2e}, max rel {emb_rel:.2e}; clipwise max abs "
        f"{clip_abs:.2e} (clipwise range {ref['clipwise_output'].min():.3f}.."
        f"{ref['clipwise_output'].max():.3f})")
  assert emb_rel < EMBEDDING_RTOL and clip_abs < CLIPWISE_ATOL
  # Not trivially equal: the outputs vary across classes and clips.
  assert np.ptp(ref["clipwise_output"]) > 0.1 and np.ptp(ref["embedding"]) > 0.1


def test_a_16k_file_as_the_32k_setup_is_refused(tmp_path):
  net = Panns("16k", (64, 128, 256, 512, 1024, 2048), 2, 3, False, classes=5)
  torch.save({"model": net.state_dict()}, tmp_path / "Cnn14_16k.pth")
  with pytest.raises(UserError, match=r"is for the 16 kHz set-up .* but panns:cnn14 is the 32 kHz "
                                      r"set-up .* import it as panns:cnn14_16k"):
    import_weights.import_weights(tmp_path / "Cnn14_16k.pth", "panns:cnn14", tmp_path / "run")


def test_damaged_and_mismatched_files(tmp_path):
  net = Panns("32k", (64, 128, 256, 512), 1, 5, True, classes=5)   # Cnn6
  sd = net.state_dict()
  torch.save({"model": sd}, tmp_path / "cnn6.pth")
  data = (tmp_path / "cnn6.pth").read_bytes()
  (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
  with pytest.raises(UserError, match="not a readable PyTorch checkpoint"):
    import_weights.import_weights(tmp_path / "truncated.pth", "panns:cnn6", tmp_path / "a")
  with pytest.raises(UserError, match=r"'conv_block1.conv1.weight' has shape \(64, 1, 5, 5\), "
                                      r"panns:cnn10 needs \(64, 1, 3, 3\)"):
    import_weights.import_weights(tmp_path / "cnn6.pth", "panns:cnn10", tmp_path / "b")
  del sd["conv_block3.bn1.running_mean"]
  torch.save({"model": sd}, tmp_path / "missing.pth")
  with pytest.raises(UserError, match=r"lacks key 'conv_block3.bn1.running_mean' \(shape \(256,\)"):
    import_weights.import_weights(tmp_path / "missing.pth", "panns:cnn6", tmp_path / "c")


def test_finetune_and_embed_from_an_imported_checkpoint(tmp_path, prepared):
  """The checkpoint brings its frontend: partial:1 fine-tuning (16 kHz speech commands) leaves
  bn0 and block1 as imported, statistics included, and embed runs the fine-tuned model."""
  import jax
  from audiotl_jax import config as config_lib
  from audiotl_jax.stages import embed, finetune
  from audiotl_jax.train import checkpoints
  net = Panns("16k", (8, 16, 32, 32), 2, 3, True)   # panns:tiny
  torch.save({"model": net.state_dict()}, tmp_path / "tiny.pth")
  import_weights.import_weights(tmp_path / "tiny.pth", "panns:tiny", tmp_path / "imported")
  before, _, _ = checkpoints.load_model(tmp_path / "imported")
  config = config_lib.load("configs/finetune.py:strategy=partial:1,runlocal")
  with config.unlocked():
    config.init = str(tmp_path / "imported")
    config.data.dir = str(prepared["speech_commands"])
    config.batch_size, config.total_steps, config.eval_every = 8, 2, 2
    config.progress = False
  finetune.run(config, tmp_path / "ft")
  after, meta, _ = checkpoints.load_model(tmp_path / "ft")
  assert meta["frontend"]["kind"] == "panns" and meta["frontend"]["n_fft"] == 512
  for part in ("params", "batch_stats"):
    for top in ("bn0", "block1"):
      for a, b in zip(jax.tree.leaves(before[part][top]), jax.tree.leaves(after[part][top])):
        np.testing.assert_array_equal(a, b)
  assert not np.array_equal(before["params"]["block2"]["conv1"]["kernel"],
                            after["params"]["block2"]["conv1"]["kernel"])
  config = config_lib.load("configs/embed.py")
  with config.unlocked():
    config.checkpoint = str(tmp_path / "ft")
    config.data.dir = str(prepared["speech_commands"])
    config.progress = False
  embed.run(config, tmp_path / "emb")
  assert list((tmp_path / "emb").rglob("*.npy"))
