"""Shards on disk: prepare writes them uncompressed, and zstd shards of earlier prepares still read.

Both through the Grain paths (`train_iterator`, `eval_batches`), which map a whole batch of
record indices at once (issue 13).
"""
from pathlib import Path

from array_record.python.array_record_module import ArrayRecordReader
import numpy as np
import soundfile as sf

from audiotl_jax.bench import pipeline as bench_pipeline
from audiotl_jax.data import pipeline, readers, records
from audiotl_jax.data.dataset import PreparedDataset
from audiotl_jax.data.shard_writer import prepare

SR, SAMPLES = 16000, 1600


def _clips(n: int) -> list[np.ndarray]:
  # Int16 at the target rate: prepare neither resamples nor rounds them, so they come back exact.
  rng = np.random.default_rng(1)
  return [rng.integers(-20000, 20000, SAMPLES).astype(np.int16) for _ in range(n)]


def _compression(path: Path) -> str:
  """The compression the file's writer used, from the options ArrayRecord stores in it."""
  reader = ArrayRecordReader(str(path))
  try:
    options = reader.writer_options_string().split(",")
  finally:
    reader.close()
  return next(o.split(":")[0] for o in options if o == "uncompressed" or o.startswith(
      ("zstd", "brotli", "snappy")))


def _all_eval(ds: PreparedDataset, batch_size: int) -> dict:
  got = {}
  for batch in pipeline.eval_batches(ds, "train", batch_size=batch_size, clip_samples=SAMPLES,
                                     process_index=0, process_count=1):
    for audio, index, mask in zip(batch["audio"], batch["index"], batch["mask"]):
      if mask:
        got[int(index)] = audio
  return got


def test_a_prepared_folder_reads_back_the_source_audio_uncompressed(tmp_path):
  d, clips = tmp_path / "wav", _clips(6)
  d.mkdir()
  for i, clip in enumerate(clips):
    sf.write(d / f"c{i}.wav", clip, SR, subtype="PCM_16")
  (d / "list.csv").write_text("path,label\n" + "".join(f"c{i}.wav,{'ab'[i % 2]}\n"
                                                      for i in range(len(clips))))
  listing = readers.get_reader("csv")(d / "list.csv")
  prepare(listing, tmp_path / "out", sample_rate=SR, num_workers=1, progress=False)
  ds = PreparedDataset(tmp_path / "out")
  split = "train"
  shard_files = sorted(Path(tmp_path / "out").glob(f"{split}-*.array_record"))
  assert shard_files and {_compression(f) for f in shard_files} == {"uncompressed"}
  by_id = {f"c{i}.wav": clip for i, clip in enumerate(clips)}
  src = ds.source(split)
  for i, id_ in enumerate(ds.ids(split)):
    np.testing.assert_array_equal(records.decode(src[i])["audio"], by_id[id_])
  got = _all_eval(ds, batch_size=4)  # one full batch and one padded
  assert sorted(got) == list(range(ds.num_records(split)))
  for i, id_ in enumerate(ds.ids(split)):
    np.testing.assert_array_equal(got[i], by_id[id_])
  # Clips of exactly clip_samples leave the random crop nothing to move: a training batch is
  # the records themselves, in the shuffled order.
  it = pipeline.train_iterator(ds, split, batch_size=3, clip_samples=SAMPLES, seed=0,
                               process_index=0, process_count=1)
  for _ in range(3):
    for audio in next(it)["audio"]:
      assert any(np.array_equal(audio, c) for c in clips)


def test_a_zstd_shard_as_earlier_prepares_wrote_still_reads(tmp_path):
  n = 5
  bench_pipeline.write_records(tmp_path, n, SAMPLES, SR, options="group_size:1")  # zstd default
  # write_records draws labels then audio from one seeded stream; redo the draws to compare.
  rng, expected = np.random.default_rng(0), []
  for _ in range(n):
    rng.integers(0, 527, 3)
    expected.append(rng.integers(-8000, 8000, SAMPLES).astype(np.int16))
  assert _compression(tmp_path / "train-00000.array_record") == "zstd"
  ds = PreparedDataset(tmp_path)
  got = _all_eval(ds, batch_size=2)
  assert sorted(got) == list(range(n))
  for i in range(n):
    np.testing.assert_array_equal(got[i], expected[i])
  batch = next(pipeline.train_iterator(ds, "train", batch_size=n, clip_samples=SAMPLES, seed=3,
                                       process_index=0, process_count=1))
  assert sorted(map(bytes, batch["audio"])) == sorted(map(bytes, expected))
  assert batch["label"].shape == (n, 527) and (batch["label"].sum(1) > 0).all()


def test_a_position_saved_in_the_old_per_record_form_is_upgraded(tmp_path):
  bench_pipeline.write_records(tmp_path, 12, SAMPLES, SR)
  ds = PreparedDataset(tmp_path)
  make = lambda: pipeline.train_iterator(ds, "train", batch_size=4, clip_samples=SAMPLES,
                                         seed=0, process_index=0, process_count=1)
  ran = make()
  for _ in range(5):
    next(ran)
  old = make()
  old.set_state({"next_index": 5 * 4})  # what the per-record pipeline saved after 5 steps
  assert pipeline.upgrade_position(old, 5, batch_size=4)
  np.testing.assert_array_equal(next(old)["audio"], next(ran)["audio"])
  assert not pipeline.upgrade_position(ran, 6, batch_size=4)  # a new state stays as it is
