"""Cutting a batch of signals into overlapping frames, shared by `logmel` and `fbank`.

The two front ends differ only in where the first frame starts and how many frames there are
(librosa's centre padding, Kaldi's snip_edges); each computes its own count and padding and
hands the signal to `frame_signal`.
"""
import jax
import jax.numpy as jnp


def frame_signal(x: jax.Array, *, frame_length: int, hop_length: int,
                 num_frames: int) -> jax.Array:
  """(batch, samples) -> (batch, num_frames, frame_length); frame f starts at f * hop_length.

  Samples past the end of `x` read as zeros, and samples no frame reads are dropped, so the
  caller chooses the frame count alone.

  Framing is reshape-based, not a gather: the signal is cut into hop-sized chunks
  (batch, chunks, hop) and frame f is chunks f .. f+k-1 concatenated (k = ceil(frame_length /
  hop)), trimmed to frame_length. That is k static slices and one concat, which XLA fuses into
  contiguous copies on every backend, whereas an index gather is slow on TPU and defeats fusion.
  """
  chunks_per_frame = -(-frame_length // hop_length)
  total = (num_frames + chunks_per_frame - 1) * hop_length
  # The buffer ends where the last frame's last chunk does.
  x = jnp.pad(x, ((0, 0), (0, max(0, total - x.shape[-1]))))[:, :total]
  chunks = x.reshape(x.shape[0], total // hop_length, hop_length)
  windows = jnp.concatenate(
      [chunks[:, j:j + num_frames] for j in range(chunks_per_frame)], axis=-1)
  return windows[..., :frame_length]
