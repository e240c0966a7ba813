"""AudioSet classes by name -> the sound synthetic AudioSet gives them, for downstream tasks.

A downstream class built from its AudioSet namesake (ESC-50's dog from "Dog", GTZAN's jazz from
"Jazz", a bird call from "Chirp, tweet") sounds the way pre-training on synthetic AudioSet heard
it, so what a model learnt there transfers, and a subset that holds the class helps more than one
that does not: the effect a transfer study measures.
"""
import functools

import numpy as np

from audiotl_jax.data import ontology as onto
from audiotl_jax.data.synthetic import sounds
# The same parameters make_audioset gives the class: that is the point of this module.
from audiotl_jax.data.synthetic.audioset import _class_params


@functools.lru_cache(maxsize=1)
def _ontology():
  # Loaded once per process, and only when a generator builds (a stamped tree never asks).
  return onto.Ontology.load()


@functools.lru_cache(maxsize=None)
def _lookup(name: str):
  ontology = _ontology()
  mid = ontology.find(name)
  # The first top-level branch in ontology order, as make_audioset's default subsets pick it.
  top = next(r for r in ontology.top_level() if r in ontology.branch_of(mid))
  return ontology.nodes[top].name, tuple(_class_params(ontology, top, mid))


def family_of(name: str) -> str:
  """The top-level AudioSet branch whose family voices the class (e.g. "Animal")."""
  return _lookup(name)[0]


def params(name: str) -> np.ndarray:
  """The class's parameter vector (sounds.DIMS values in [0, 1]); a fresh copy each call."""
  return np.array(_lookup(name)[1])


def render(name, rng, n, sr, *, u=None, jitter=0.0):
  """n samples of the class at sr, unit RMS; `u` overrides the parameters, `jitter` (std) moves
  them per call (one recording or one speaker differs a little from the next)."""
  u = params(name) if u is None else np.asarray(u, float)
  if jitter:
    u = np.clip(u + rng.normal(0, jitter, u.size), 0.0, 1.0)
  make = sounds.FAMILIES.get(family_of(name), sounds.broadband)
  return sounds.unit(make(u, rng, n, sr))
