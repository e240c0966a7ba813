"""Synthetic AudioSet: segment CSVs in the official format, one wav per segment, classes whose
sounds follow their place in the ontology (siblings differ, cousins stay closer than strangers).
"""
import zlib

import numpy as np
from tqdm import tqdm

from audiotl_jax.data import ontology as onto
from audiotl_jax.data.synthetic import sounds
from audiotl_jax.data.synthetic.writing import build_once, check_min, write_wav
from audiotl_jax.errors import UserError

DEFAULT_SUBSETS = ("Animal", "Human sounds", "Music", "Natural sounds", "Sounds of things")
_YT_CHARS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))
# Peterson & Barney (1952) adult-male averages of F1-F3 in Hz.

def _class_params(ontology, root, mid):
  """Parameters from the path root -> class: each level moves them less than the one above.

  Each level spreads the siblings over that level's share of the range, in a different order
  per parameter (seeded by the parent), so siblings differ everywhere but stay near their parent.
  """
  parent, queue = {root: None}, [root]
  for node in queue:  # breadth first: the shortest path, in ontology order
    for c in ontology.nodes[node].children:
      if c not in parent:
        parent[c] = node
        queue.append(c)
  path, m = [], mid
  while parent[m] is not None:
    path.append((parent[m], ontology.nodes[parent[m]].children.index(m)))
    m = parent[m]
  u = 0.5 + np.random.default_rng(zlib.crc32(mid.encode())).uniform(-0.02, 0.02, sounds.DIMS)
  for level, (p, i) in enumerate(reversed(path)):
    kids = len(ontology.nodes[p].children)
    order = np.random.default_rng(zlib.crc32(p.encode())).permuted(
        np.tile(np.arange(kids), (sounds.DIMS, 1)), axis=1)
    u += 0.6 * 0.45 ** level * ((order[:, i] + 0.5) / kids - 0.5)
  return np.clip(u, 0.0, 1.0)


def _choose_classes(ontology, name, k, taken):
  """Up to k unused classes of a subset, round robin over the named nodes' children.

  When k is below the number of children, the children taken first are evenly spaced over the
  ontology's order, so a small pick still spans the branch; the named nodes themselves come last.
  """
  sub = ontology.subset(name)
  avail = [m for m in sub.mids if m not in taken]
  if k is None or k >= len(avail):
    return avail
  trainable = set(ontology.classes)
  heads = [c for p in name.split("+") for c in ontology.nodes[ontology.find(p)].children]
  groups = [[] for _ in heads]
  rest = []
  # Leaves first, and among them classes of one branch only (a bell under both Music and Sounds
  # of things is a poor example of either).
  for m in sorted(avail, key=lambda m: (bool(ontology.descendants(m, False) & trainable),
                                        len(ontology.branch_of(m)) > 1)):
    g = next((i for i, h in enumerate(heads) if m in ontology.descendants(h)), None)
    (rest if g is None else groups[g]).append(m)
  spread = list(dict.fromkeys(int(j * len(heads) / min(k, len(heads)))
                              for j in range(min(k, len(heads)))))
  groups = [groups[i] for i in spread] + [g for i, g in enumerate(groups) if i not in spread]
  picked = []
  while len(picked) < k and any(groups):
    for g in groups:
      if g and len(picked) < k:
        picked.append(g.pop(0))
  picked += rest[:k - len(picked)]
  return sorted(picked, key=ontology.class_index.get)



def make_audioset(root, *, subsets=DEFAULT_SUBSETS, clips_per_class=40,
                  num_classes_per_subset=None, eval_clips_per_class=10, clip_seconds=1.0,
                  sample_rate=16000, multi_label_prob=0.25, seed=0, ontology=None,
                  progress=False) -> dict:
  """Writes an AudioSet-like tree: official-format segment CSVs and one wav per segment.

  root/balanced_train_segments.csv, root/eval_segments.csv and
  root/audio/{balanced_train,eval}/Y{YTID}_{start:.3f}_{end:.3f}.wav. Classes are the trainable
  classes of each subset (up to num_classes_per_subset, spread over the branch, none shared
  between subsets); a clip sounds like the top-level branch its subset belongs to. With
  probability multi_label_prob a clip also carries a second generated class. The stamp that lets
  a repeated call skip the work records the arguments, not the ontology passed in.
  """
  if isinstance(subsets, str):
    subsets = (subsets,)
  check_min(clips_per_class=(clips_per_class, 1), eval_clips_per_class=(eval_clips_per_class, 1),
         num_classes_per_subset=(num_classes_per_subset or 1, 1), clip_seconds=(clip_seconds, 0.1),
         sample_rate=(sample_rate, 8000))
  if not 0 <= multi_label_prob <= 1:
    raise UserError(f"synthetic AudioSet: multi_label_prob must be in [0, 1], "
                    f"got {multi_label_prob}")
  args = dict(subsets=list(subsets), clips_per_class=clips_per_class,
              num_classes_per_subset=num_classes_per_subset,
              eval_clips_per_class=eval_clips_per_class, clip_seconds=clip_seconds,
              sample_rate=sample_rate, multi_label_prob=multi_label_prob, seed=seed)
  ontology = ontology or onto.Ontology.load()
  return build_once(root, "audioset", args,
                  lambda r: _build_audioset(r, ontology, progress=progress, **args))


def _build_audioset(root, ontology, *, subsets, clips_per_class, num_classes_per_subset,
                    eval_clips_per_class, clip_seconds, sample_rate, multi_label_prob, seed,
                    progress):
  classes, by_subset, family, params = [], {}, {}, {}
  for name in subsets:
    chosen = _choose_classes(ontology, name, num_classes_per_subset, set(classes))
    if not chosen:
      raise UserError(f"synthetic AudioSet: every class of subset {name!r} is already taken by "
                      f"an earlier subset in {list(subsets)}")
    by_subset[ontology.subset(name).name] = chosen
    roots = set().union(*(ontology.branch_of(p) for p in name.split("+")))
    for m in chosen:
      top = next(r for r in ontology.top_level() if r in roots & ontology.branch_of(m))
      family[m] = ontology.nodes[top].name
      params[m] = _class_params(ontology, top, m)
    classes += chosen
  n = int(round(clip_seconds * sample_rate))

  def sound(m, rng):
    return sounds.unit(sounds.FAMILIES.get(family[m], sounds.broadband)(params[m], rng, n, sample_rate))

  splits = (("balanced_train", clips_per_class), ("eval", eval_clips_per_class))
  total = len(classes) * (clips_per_class + eval_clips_per_class)
  ids, rng = [], np.random.default_rng([seed, 1])
  while len(ids) < total:  # unique 11-character YouTube-like ids
    draw = _YT_CHARS[rng.integers(0, 64, (total, 11))]
    ids = list(dict.fromkeys(ids + ["".join(c) for c in draw]))
  bar, counter, multi = tqdm(total=total, desc="synthetic AudioSet", disable=not progress), 0, 0
  for split_no, (split, per_class) in enumerate(splits):
    (root / "audio" / split).mkdir(parents=True)
    rows = []
    for ci, m in enumerate(classes):
      for j in range(per_class):
        rng = np.random.default_rng([seed, 2, split_no, ci, j])
        x, labels = sound(m, rng), [m]
        if len(classes) > 1 and rng.random() < multi_label_prob:
          other = classes[(ci + 1 + rng.integers(len(classes) - 1)) % len(classes)]
          x, labels, multi = x + rng.uniform(0.25, 0.8) * sound(other, rng), [m, other], multi + 1
        start = 10.0 * rng.integers(0, 30)
        ytid = ids[counter]
        write_wav(root / "audio" / split / f"Y{ytid}_{start:.3f}_{start + clip_seconds:.3f}.wav",
               sounds.finish(x, rng), sample_rate)
        rows.append((ytid, start, start + clip_seconds, labels))
        counter += 1
        bar.update()
    rows.sort()
    with open(root / f"{split}_segments.csv", "w", encoding="utf-8") as f:
      f.write(f"# Segments csv created by audiotl_jax.data.synthetic (seed={seed})\n"
              f"# num_ytids={len(rows)}, num_segs={len(rows)}, "
              f"num_unique_labels={len({l for r in rows for l in r[3]})}, "
              f"num_positive_labels={sum(len(r[3]) for r in rows)}\n"
              "# YTID, start_seconds, end_seconds, positive_labels\n")
      f.writelines(f'{y}, {s:.3f}, {e:.3f}, "{",".join(l)}"\n' for y, s, e, l in rows)
  bar.close()
  return {"paths": {"train_csv": "balanced_train_segments.csv", "eval_csv": "eval_segments.csv",
                    "train_audio": "audio/balanced_train", "eval_audio": "audio/eval"},
          "classes": by_subset, "families": family, "train_clips": len(classes) * clips_per_class,
          "eval_clips": len(classes) * eval_clips_per_class, "multi_label_clips": multi,
          "sample_rate": sample_rate, "clip_seconds": clip_seconds}
