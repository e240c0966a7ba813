"""Config blocks shared by every stage: frontend, augmentation, optimizer.

Kept in one place so that pre-training and fine-tuning compute features the same way unless a
config says otherwise.
"""
import ml_collections


def frontend(runlocal: bool = False) -> ml_collections.ConfigDict:
  # 16 kHz, 25 ms window, 10 ms hop, 64 mel bands from 50 Hz to 8 kHz: the PANNs-style front end.
  return ml_collections.ConfigDict(dict(
      sample_rate=16000, n_fft=400 if not runlocal else 256, hop_length=160, n_mels=64,
      fmin=50.0, fmax=8000.0, norm_batches=8 if not runlocal else 2))


def augment(*, specaugment: bool = True, mixup_alpha: float = 0.0) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      specaugment=specaugment, freq_masks=2, freq_width=8, time_masks=2, time_width=20,
      mixup_alpha=mixup_alpha))


def optim(lr: float, *, weight_decay: float = 1e-4) -> ml_collections.ConfigDict:
  # warmup_steps < 1 is a fraction of the total steps.
  return ml_collections.ConfigDict(dict(
      lr=lr, warmup_steps=0.05, weight_decay=weight_decay, grad_clip=1.0, end_lr_factor=0.01))
