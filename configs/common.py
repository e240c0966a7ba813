"""Config blocks shared by every stage: frontend, augmentation, optimizer.

Kept in one place so that pre-training and fine-tuning compute features the same way unless a
config says otherwise.
"""
import ml_collections


def frontend(runlocal: bool = False, kind: str = "logmel") -> ml_collections.ConfigDict:
  # 16 kHz, 25 ms window, 10 ms hop, 64 mel bands from 50 Hz to 8 kHz: the PANNs-style front end.
  # kind="fbank": AST's Kaldi fbank (128 bins, padded/cropped to target_frames, 0 = the clip's
  # own count) normalised with fbank_mean/fbank_std (AudioSet's; `audiotl stats` gives a
  # dataset's own); n_fft, fmin and fmax then do not apply.
  # kind="panns": torchlibrosa's log-mel of PANNs' 16 kHz set-up (window 512, hop 160, 64 mels,
  # 50-8000 Hz), not normalised (the model's bn0 does it); an imported checkpoint brings its own.
  # kind="vggish": VGGish's fixed features (25 ms, 10 ms, 64 HTK mels, 96-frame examples).
  fbank = kind == "fbank"
  return ml_collections.ConfigDict(dict(
      kind=kind, sample_rate=16000,
      n_fft=512 if kind == "panns" else (400 if not runlocal else 256), hop_length=160,
      n_mels=128 if fbank else 64, fmin=50.0, fmax=8000.0,
      norm_batches=8 if not runlocal else 2, target_frames=0, fbank_mean=-4.2677393,
      fbank_std=4.5689974))


def frontend_kind(model: str) -> str:
  """The frontend a model family was built for: AST's fbank, PANNs' and VGGish's own, else ours."""
  return {"ast": "fbank", "panns": "panns", "vggish": "vggish"}.get(model.partition(":")[0],
                                                                     "logmel")


def augment(*, specaugment: bool = True, mixup_alpha: float = 0.0,
            gain_db: float = 0.0) -> ml_collections.ConfigDict:
  # gain_db > 0: each training clip is scaled by a random gain in [-gain_db, gain_db] dB.
  return ml_collections.ConfigDict(dict(
      specaugment=specaugment, freq_masks=2, freq_width=8, time_masks=2, time_width=20,
      mixup_alpha=mixup_alpha, gain_db=gain_db))


def optim(lr: float, *, weight_decay: float = 1e-4) -> ml_collections.ConfigDict:
  # warmup_steps < 1 is a fraction of the total steps.
  return ml_collections.ConfigDict(dict(
      lr=lr, warmup_steps=0.05, weight_decay=weight_decay, grad_clip=1.0, end_lr_factor=0.01))
