"""The study-level analyses on a study folder the score stage really wrote: layer-wise transfer
with the probe, CKA and parameter distance between states, projections, and the exported
per-clip metadata."""
import json

import numpy as np
import pandas as pd
import pytest

from audiotl_jax.analysis import layers, projection, similarity
from audiotl_jax.errors import UserError
from audiotl_jax.scores import params as params_lib
from audiotl_jax.stages import embed as embedding
from audiotl_jax.stages import pretrain
from audiotl_jax.stages import score as scoring
from tests.conftest import tiny_pretrain_config

LAYERS = ["embedding", "block2"]  # as the demo lists them: the report's table's layer first
DEPTH = ["block2", "embedding"]


@pytest.fixture(scope="module")
def study(prepared, pretrained, tmp_path_factory):
  """Two steps of one pre-training run as two states (subset, fraction as pre-training runs
  record them) and an untrained scratch state, scored with two layers and the probe on."""
  root = tmp_path_factory.mktemp("study")
  pretrain.run(tiny_pretrain_config(prepared["audioset"], init_only=True),
               root / "pretrain" / "scratch")
  for name, fraction in (("late", 1.0), ("early", 0.5)):
    (root / "pretrain" / name).mkdir(parents=True)
    (root / "pretrain" / name / "results.json").write_text(json.dumps(
        {"stage": "pretrain", "subset": "Human sounds", "fraction": fraction}))
  states = {"scratch": root / "pretrain" / "scratch", "late": pretrained / "checkpoints" / "4",
            "early": pretrained / "checkpoints" / "2"}
  rows = scoring.score(checkpoints=states, dataset_dir=prepared["speech_commands"],
                       split="train", layers=LAYERS, scores=["nc_score", "logme"],
                       out_dir=root / "score", batch_size=8, probe="linear", progress=False)
  return root, rows


def test_score_stage_adds_the_probe(study):
  root, rows = study
  saved = json.loads((root / "score/scores.json").read_text())
  assert saved["probe"]["split"] in ("test", "validation") and saved["probe"]["metric"] == (
      "accuracy")
  assert saved["layers"] == LAYERS and saved["split"] == "train"
  assert saved["depth_order"] == DEPTH  # from the model's outputs, recorded by embed
  assert list(saved["scores"]) == ["nc_score", "logme"]  # the probe is no score
  assert [(r["source"], r["layer"]) for r in rows] == [
      (s, x) for s in ("scratch", "late", "early") for x in LAYERS]
  for row in rows:
    assert 0 <= row["probe"]["accuracy"] <= 1
  table = pd.read_csv(root / "score/scores.csv")
  np.testing.assert_allclose(table["probe_accuracy"], [r["probe"]["accuracy"] for r in rows])
  # The probe split was embedded beside the scored one, with its per-clip table.
  assert (root / "score/embeddings/late" / saved["probe"]["split"] / "embedding.npy").exists()


def test_metadata_parquet_matches_ids_and_labels(study, prepared):
  root, _ = study
  split = root / "score/embeddings/late/train"
  table = pd.read_parquet(split / "metadata.parquet")
  assert list(table.columns) == ["index", "clip_id", "label", "label_name", "split"]
  assert table["clip_id"].tolist() == json.loads((split / "ids.json").read_text())
  np.testing.assert_array_equal(table["label"], np.load(split / "labels.npy"))
  np.testing.assert_array_equal(table["index"], np.arange(len(table)))
  classes = json.loads((split / "metadata.json").read_text())["classes"]
  assert table["label_name"].tolist() == [classes[i]["name"] for i in table["label"]]
  assert set(table["split"]) == {"train"}


def test_metadata_parquet_of_a_multilabel_split(tmp_path):
  labels = np.zeros((3, 4), np.float32)
  labels[0, [1, 3]] = 1
  labels[2, 0] = 1
  np.save(tmp_path / "labels.npy", labels)
  embedding._write_clips(tmp_path, "eval", ["a", "b", "c"], ["w", "x", "y", "z"])
  table = pd.read_parquet(tmp_path / "metadata.parquet")
  assert [list(v) for v in table["label"]] == [[1, 3], [], [0]]
  assert [list(v) for v in table["label_name"]] == [["x", "z"], [], ["w"]]


def test_similarity_section(study):
  root, _ = study
  lines = similarity.section(root)
  saved = json.loads((root / "similarity.json").read_text())
  assert [r["layer"] for r in saved["cka"]] == DEPTH
  for record in saved["cka"]:
    # Ordered by subset, then fraction; scratch last.
    assert record["states"] == ["early", "late", "scratch"]
    matrix = np.array(record["matrix"])
    np.testing.assert_allclose(np.diagonal(matrix), 1, atol=1e-5)
    np.testing.assert_allclose(matrix, matrix.T)
    assert ((matrix > -1e-6) & (matrix < 1 + 1e-6)).all()
  params = saved["param_distance"]
  assert params["states"] == ["early", "late", "scratch"]
  distance = np.array(params["matrix"])
  np.testing.assert_array_equal(np.diagonal(distance), 0)
  np.testing.assert_allclose(distance, distance.T)
  assert distance[0, 2] > 0 and distance[1, 2] > 0 and distance[0, 1] > 0
  assert not any(leaf.startswith("head/") for leaf in params["left_out"])
  assert params["excluded"] == ["head"] and params["num_params"] > 0
  for name in ("similarity_block2.png", "similarity_embedding.png", "param_distance.png"):
    assert (root / name).stat().st_size > 0 and f"]({name})" in "\n".join(lines)


def test_param_distance_against_numpy():
  """Close states (one run's steps) are resolved, far ones right; heads and unshared arrays are
  left out."""
  rng = np.random.default_rng(0)
  base = {"block1/kernel": rng.normal(size=(40, 30)), "embedding/bias": rng.normal(size=(7,)),
          "head/kernel": rng.normal(size=(7, 3))}
  states = {"a": base, "b": {k: v + 1e-4 * rng.normal(size=v.shape) for k, v in base.items()},
            "c": {k: rng.normal(size=v.shape) for k, v in base.items()},
            "d": {k: 3 * v for k, v in base.items()}}
  states["c"]["extra/kernel"] = np.ones(3)
  states["d"]["head/kernel"] = np.ones((7, 5))
  flats = {k: {n: v.astype(np.float32) for n, v in d.items()} for k, d in states.items()}
  got, info = params_lib.cosine_distances(flats, chunk=256)
  vectors = [np.concatenate([f["block1/kernel"].ravel(), f["embedding/bias"]]).astype(float)
             for f in flats.values()]
  expected = np.array([[1 - u @ v / np.linalg.norm(u) / np.linalg.norm(v) for v in vectors]
                       for u in vectors])
  np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-7)
  assert got[0, 1] == pytest.approx(expected[0, 1], rel=1e-3)  # ~5e-9: no cancellation
  np.testing.assert_array_equal(np.diagonal(got), 0)
  assert info["num_params"] == 1207 and info["left_out"] == ["extra/kernel"]


def test_layers_section_on_the_real_study(study):
  root, rows = study
  lines = layers.section(root)
  assert (root / "layers.png").stat().st_size > 0
  text = "\n".join(lines)
  for state in ("early", "late", "scratch"):
    acc = {r["layer"]: r["probe"]["accuracy"] for r in rows if r["source"] == state}
    best = DEPTH[int(np.argmax([acc[x] for x in DEPTH]))]  # the first of ties, by depth
    row = next(line for line in lines if line.startswith(f"| {state} |"))
    assert row.split(" | ")[1].startswith(f"`{best}`"), row
  assert "![layer-wise transfer](layers.png)" in text
  assert "Layers in the model's order: `block2`, `embedding`." in text


def test_projection_section(study, monkeypatch):
  root, rows = study
  lines = projection.section(root, tsne_max=0)
  assert (root / "projection_embedding_pca.png").stat().st_size > 0
  assert not (root / "projection_embedding_tsne.png").exists()
  assert any("t-SNE left out" in line for line in lines)
  n = rows[0]["num_clips"]
  lines = projection.section(root, layer="block2", methods=["tsne"], max_clips=n - 5)
  assert (root / "projection_block2_tsne.png").stat().st_size > 0
  assert f"A seeded sample of {n - 5} of the {n} clips" in "\n".join(lines)
  monkeypatch.setattr(projection.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(UserError, match="needs the umap-learn package"):
    projection.section(root, methods=["umap"])
  with pytest.raises(UserError, match="unknown projection method 'lda'"):
    projection.project(np.zeros((5, 2)), "lda")


def _scores_json(path, names, rows):
  path.mkdir(parents=True)
  (path / "scores.json").write_text(json.dumps({
      "scores": {"nc_score": {"higher_is_better": False}, "logme": {"higher_is_better": True}},
      "split": "train", "layers": names[::-1], "depth_order": names,
      "probe": {"kind": "linear", "train_split": "train", "split": "test", "metric": "accuracy"},
      "rows": rows}))


@pytest.mark.parametrize("names", [["block1", "block2", "block3", "embedding"],
                                   ["block1_cls", "block6_cls", "block12_cls", "cls"]],
                         ids=["cnn", "ast"])
def test_layer_table_for_each_family(tmp_path, names):
  """The model's order from `layers`, never sorted by name (`block12` after `block6`)."""
  probe = {"a": [0.2, 0.5, 0.9, 0.7], "b": [0.6, 0.4, 0.3, 0.2]}
  logme = {"a": [0.1, 0.2, 0.4, 0.3], "b": [0.5, 0.1, 0.2, 0.3]}
  nc = {"a": [3.0, 2.0, 1.0, 0.5], "b": [1.0, 2.0, 3.0, 4.0]}  # lower is better
  rows = [{"source": s, "layer": x, "logme": logme[s][i], "nc_score": nc[s][i],
           "probe": {"accuracy": probe[s][i]}} for s in ("b", "a") for i, x in enumerate(names)]
  _scores_json(tmp_path / "score", names, rows)
  lines = layers.section(tmp_path)
  a = next(line for line in lines if line.startswith("| a |")).split(" | ")
  b = next(line for line in lines if line.startswith("| b |")).split(" | ")
  assert a[1] == f"`{names[2]}` (0.900)" and b[1] == f"`{names[0]}` (0.600)"
  # nc_score is negated: its best layer for a is the last (differs), for b the first (agrees).
  assert a[2].startswith(f"`{names[3]}` (differs)") and b[2].startswith(f"`{names[0]}` (agrees)")
  assert a[3].startswith(f"`{names[2]}` (agrees), rho 1.00")  # logme follows a's probe exactly
  assert "rho 0.80" in a[2]  # -nc rises over depth; the probe's ranks are (1, 2, 4, 3)
  assert (tmp_path / "layers.png").stat().st_size > 0
  assert "for 3 of 4 (state, score) pairs" in "\n".join(lines)


def test_best_layer_ties_and_layer_independent_scores():
  from audiotl_jax.analysis import layers as layers_lib
  names = ["block1", "block2", "block3"]
  curve = {layers_lib.PROBE: np.array([0.8, 1.0, 1.0]), "logme": np.array([0.1, 0.2, 0.3]),
           "nc_score": np.array([0.3, 0.2, 0.1]), "leep": np.array([-2.2, -2.2, -2.2])}
  best = layers_lib.best_layers(curve, names)
  assert best["logme"]["layer"] == "block3" and best["logme"]["agrees"]  # tied with block2
  assert best["nc_score"]["layer"] == "block1" and not best["nc_score"]["agrees"]
  assert best["leep"]["layer"] is None  # reads the source head: no best layer
