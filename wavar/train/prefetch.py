"""Training batches drawn ahead on a thread, so the GPU never waits for the host.

The thread draws each batch from the run's data generator in order (so the batches are the
ones the loop would draw itself), pads it, and on CUDA puts it in pinned memory: the loop's
copy to the device is then truly asynchronous and the host runs ahead of the GPU. A checkpoint
must record the generator as it stood after the last batch *consumed*, not after the ones
waiting in the queue: each batch carries that state (:attr:`Prefetcher.consumed_state`).
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import numpy as np
import torch

from wavar.train.packing import PER_POSITION, pack_batch


def pad_batch(batch: dict[str, np.ndarray], pad_to: int = 1,
              max_len: int | None = None) -> dict[str, torch.Tensor]:
    """numpy batch -> CPU tensors, the T axis padded up to a multiple of ``pad_to`` (not
    beyond ``max_len``) so torch.compile sees few distinct shapes. Padding is invalid."""
    T = batch["tokens"].shape[1]
    pad = (-T) % pad_to
    if max_len is not None:
        pad = max(0, min(pad, max_len - T))
    out = {}
    for key, value in batch.items():
        t = torch.from_numpy(np.ascontiguousarray(value))
        if pad and key in PER_POSITION:
            t = torch.cat([t, t.new_zeros((t.shape[0], pad, *t.shape[2:]))], dim=1)
        out[key] = t
    return out


def host_batch(batch: dict[str, np.ndarray], pad_to: int = 1, max_len: int | None = None,
               pack_len: int = 0, row_multiple: int = 1) -> dict[str, torch.Tensor]:
    """numpy batch -> CPU tensors: packed into rows of ``pack_len`` positions (their number a
    multiple of ``row_multiple``, :func:`pack_batch`), or else padded (:func:`pad_batch`)."""
    if pack_len:
        return pack_batch(batch, pack_len, row_multiple, max_len)
    return pad_batch(batch, pad_to, max_len)


class Prefetcher:
    """``next()`` gives ``(np_batch, batch)``: the numpy batch and its padded tensors on
    ``device`` (with ``pack_len``, packed: :func:`wavar.train.packing.pack_batch`), ``depth``
    batches drawn ahead by a daemon thread."""

    def __init__(self, source, batch_size: int, rng: np.random.Generator,
                 device: torch.device, pad_to: int = 1, max_len: int | None = None,
                 depth: int = 3, buckets: int = 1, pack_len: int = 0,
                 row_multiple: int = 1) -> None:
        self.device = device
        self.waited_s = 0.0  # the loop's time blocked on an empty queue: the host bounds it
        self.consumed_state: dict[str, Any] = rng.bit_generator.state
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        pin = device.type == "cuda"

        def produce() -> None:
            try:
                while not self._stop.is_set():
                    np_batch = (source.sample_batch(batch_size, rng, buckets) if buckets > 1
                                else source.sample_batch(batch_size, rng))
                    tensors = host_batch(np_batch, pad_to, max_len, pack_len, row_multiple)
                    if pin:
                        tensors = {k: v.pin_memory() for k, v in tensors.items()}
                    item = (np_batch, tensors, rng.bit_generator.state)
                    while not self._stop.is_set():
                        try:
                            self._queue.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
            except BaseException as e:  # handed to the loop, which raises it
                self._queue.put((None, e, None))

        self._thread = threading.Thread(target=produce, name="wavar-prefetch", daemon=True)
        self._thread.start()

    def next(self) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor]]:
        t = time.perf_counter()
        np_batch, tensors, state = self._queue.get()
        self.waited_s += time.perf_counter() - t
        if np_batch is None:
            raise tensors
        self.consumed_state = state
        batch = {k: v.to(self.device, non_blocking=True) for k, v in tensors.items()}
        return np_batch, batch

    def consumed_rng(self) -> np.random.Generator:
        """A generator standing where the run's stood after the last consumed batch."""
        rng = np.random.default_rng()
        rng.bit_generator.state = self.consumed_state
        return rng

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
