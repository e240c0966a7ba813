"""How far apart pre-trained states are in weight space: the cosine distance between their
flattened parameters.

Only the parameters every state has, with equal shapes, are compared, and never the
classification head (`head`, top-level in every family): two heads over different source
classes are not the same parameters even when their shapes agree. BatchNorm statistics are
not parameters and are left out too. The states are loaded through `train.checkpoints`, the one
checkpoint loader, so a workdir gives its best step and a step folder itself.

States of one run lie close together (distances of 1e-5 and less), where 1 - cos from dot
products cancels: in float32 it would be noise. So the distance is taken as
|a/|a| - b/|b||^2 / 2 (the same number), summed from the elementwise differences, which cancel
nothing. Two passes over fixed-size column chunks (one compiled shape each): the norms, then the
pairwise sums of squared differences (S^2 x chunk work, S x chunk memory); sums over chunks are
in float64 on the host.
"""
import jax
import jax.numpy as jnp
import numpy as np

from audiotl_jax.errors import UserError
from audiotl_jax.train import checkpoints

EXCLUDE = ("head",)  # top-level parameter collections never compared
CHUNK = 1 << 22      # parameters per column chunk: S x 16 MiB in float32


def flat_params(checkpoint) -> dict[str, np.ndarray]:
  """{"block1/conv/kernel": array, ...}: a checkpoint's parameters (not batch statistics)."""
  variables, _, _ = checkpoints.load_model(checkpoint)
  leaves = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
  return {"/".join(_key(k) for k in path): np.asarray(v) for path, v in leaves}


def _key(k) -> str:
  return str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))


def shared_leaves(flats: dict[str, dict], exclude=EXCLUDE) -> tuple[list[str], list[str]]:
  """(the leaf names every state has with one shape, outside `exclude`; the others outside
  `exclude`: missing from a state or shaped differently), both sorted."""
  names = sorted(n for n in set().union(*flats.values()) if n.split("/")[0] not in exclude)
  shared, left_out = [], []
  for name in names:
    shapes = {np.shape(f[name]) if name in f else None for f in flats.values()}
    (shared if None not in shapes and len(shapes) == 1 else left_out).append(name)
  return shared, left_out


def cosine_distances(flats: dict[str, dict], exclude=EXCLUDE, *,
                     chunk: int = CHUNK) -> tuple[np.ndarray, dict]:
  """(S, S) cosine distances 1 - <a, b> / (|a| |b|) between the states' shared parameters
  (NaN where a state's shared parameters are all zero), and {num_params, leaves, excluded,
  left_out}: the count of parameters compared, of their arrays, the collections excluded by
  name and the arrays not shared."""
  if len(flats) < 1:
    raise UserError("no states to compare")
  shared, left_out = shared_leaves(flats, exclude)
  if not shared:
    raise UserError(f"the {len(flats)} states share no parameters of equal shape outside "
                    f"{', '.join(exclude)}")
  states = list(flats.values())
  squares = np.zeros(len(states))
  for block in _column_chunks(states, shared, chunk):
    squares += np.asarray(_squares(block), np.float64)
  norms = np.sqrt(squares)
  scale = jnp.asarray(np.where(norms > 0, 1 / np.where(norms > 0, norms, 1), 0), jnp.float32)
  distance = np.zeros((len(states), len(states)))
  for block in _column_chunks(states, shared, chunk):
    distance += np.asarray(_pair_squares(block, scale), np.float64) / 2
  distance = np.clip(distance, 0, 2)
  zero = norms == 0  # no direction: no cosine
  distance[zero, :] = distance[:, zero] = np.nan
  info = {"num_params": int(sum(np.size(states[0][n]) for n in shared)),
          "leaves": len(shared), "excluded": list(exclude), "left_out": left_out}
  return distance, info


def _column_chunks(states: list[dict], names: list[str], chunk: int):
  """(S, chunk) float32 blocks of the states' flattened parameters, the last zero-padded (zeros
  add nothing to a dot product)."""
  block, filled = np.zeros((len(states), chunk), np.float32), 0
  for name in names:
    columns = [np.ravel(s[name]) for s in states]
    start = 0
    while start < columns[0].size:
      take = min(chunk - filled, columns[0].size - start)
      for i, c in enumerate(columns):
        block[i, filled:filled + take] = c[start:start + take]
      filled, start = filled + take, start + take
      if filled == chunk:
        yield block
        block, filled = np.zeros_like(block), 0
  if filled:
    yield block


@jax.jit
def _squares(block: jax.Array) -> jax.Array:
  return jnp.sum(jnp.square(block), axis=1)


@jax.jit
def _pair_squares(block: jax.Array, scale: jax.Array) -> jax.Array:
  """(S, S) sums of squared differences between the rows scaled to unit norm (over all
  chunks), one row against all at a time."""
  unit = block * scale[:, None]
  return jax.lax.map(lambda row: jnp.sum(jnp.square(unit - row), axis=1), unit)
