"""Device prefetch: batch n+1 goes onto the mesh while step n runs.

`DevicePrefetch` wraps the training iterator: a background thread reads the next `depth` batches
and places each as global arrays sharded over `data` (`mesh.to_global`), as
`flax.jax_utils.prefetch_to_device` did for pmap. The step then receives arrays already on the
devices, and the host's read and copy overlap the step instead of preceding it.

Checkpoints must record the batches the steps consumed, not those waiting in the queue: a
resumed run would otherwise skip them. So the thread stores the wrapped iterator's state after
each batch next to the batch, and `get_state` answers the state stored with the last batch handed
out. It is a Grain `DatasetIterator`, so `grain.checkpoint.CheckpointSave(prefetcher)` saves that
state and `CheckpointRestore` sets it (dropping the queue) in the same JSON as the bare iterator:
checkpoints written with and without prefetch are interchangeable.
"""
import queue
import threading

import grain

from audiotl_jax.train import mesh as mesh_lib

_END = object()  # the wrapped iterator is exhausted


def _fill(iterator, mesh, out: queue.Queue, stop: threading.Event) -> None:
  # Holds no reference to the DevicePrefetch, so dropping that stops this thread (`__del__`).
  try:
    while not stop.is_set():
      try:
        batch = next(iterator)
      except StopIteration:
        item = (_END, None)
      else:
        item = (iterator.get_state(), mesh_lib.to_global(batch, mesh))
      while not stop.is_set():
        try:
          out.put(item, timeout=0.1)
          break
        except queue.Full:
          continue
      if item[0] is _END:
        return
  except BaseException as e:  # pylint: disable=broad-except  (re-raised in the consumer)
    out.put((e, None))


class DevicePrefetch(grain.DatasetIterator):
  """Global batches on `mesh`, read `depth` ahead; `get_state` is that of the batches consumed.

  `depth` 0 reads in the caller's thread, one batch at a time (no prefetch, same results).
  """

  def __init__(self, iterator, mesh, depth: int = 2):
    super().__init__()
    if depth < 0:
      raise ValueError(f"config key 'data.prefetch' must be >= 0, got {depth}")
    self._iterator, self._mesh, self._depth = iterator, mesh, int(depth)
    self._state = iterator.get_state()
    self._thread = self._queue = self._stop = None

  def _start(self) -> None:
    self._queue, self._stop = queue.Queue(maxsize=self._depth), threading.Event()
    self._thread = threading.Thread(target=_fill, daemon=True, name="device-prefetch",
                                    args=(self._iterator, self._mesh, self._queue, self._stop))
    self._thread.start()

  def __next__(self):
    if not self._depth:
      batch = mesh_lib.to_global(next(self._iterator), self._mesh)
      self._state = self._iterator.get_state()
      return batch
    if self._thread is None:
      self._start()
    state, batch = self._queue.get()
    if state is _END:
      self.close()
      raise StopIteration
    if isinstance(state, BaseException):
      self.close()
      raise state
    self._state = state
    return batch

  def get_state(self):
    return self._state

  def set_state(self, state) -> None:
    # The queued batches belong to the old position: drop them, then read from the new one.
    self.close()
    self._iterator.set_state(state)
    self._state = self._iterator.get_state()

  def close(self) -> None:
    """Stops the thread and drops the queue; the next `next` starts again from `get_state`."""
    if self._thread is None:
      return
    self._stop.set()
    self._thread.join()
    self._thread = self._queue = self._stop = None
    # The thread read past the consumed batches: put the wrapped iterator back where they end.
    self._iterator.set_state(self._state)

  def __del__(self):
    if getattr(self, "_stop", None) is not None:
      self._stop.set()
