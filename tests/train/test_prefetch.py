"""The prefetcher hands out the very batches the loop would draw itself, and a checkpoint taken
mid-queue records the generator after the consumed batches only."""

import numpy as np
import pytest
import torch

from wavar.train.prefetch import Prefetcher, pad_batch


class Source:
    def sample_batch(self, batch_size, rng):
        n = int(rng.integers(3, 9))  # varying lengths, as real sequences
        return {"tokens": rng.integers(0, 7, (batch_size, n)),
                "valid": np.ones((batch_size, n), bool), "label": rng.integers(0, 10, batch_size)}


def test_batches_are_the_direct_draws_and_the_state_follows_consumption():
    direct = np.random.default_rng(7)
    expected = [Source().sample_batch(4, direct) for _ in range(5)]
    states = []
    probe = np.random.default_rng(7)
    for _ in range(5):
        Source().sample_batch(4, probe)
        states.append(probe.bit_generator.state)

    batches = Prefetcher(Source(), 4, np.random.default_rng(7), torch.device("cpu"), pad_to=4,
                         depth=3)
    try:
        for i in range(5):
            np_batch, batch = batches.next()
            assert np.array_equal(np_batch["tokens"], expected[i]["tokens"])
            T = expected[i]["tokens"].shape[1]
            assert batch["tokens"].shape[1] == T + (-T) % 4  # padded for compile
            assert not batch["valid"][:, T:].any()
            # the queue is ahead by now, yet the recorded state is that after batch i
            assert batches.consumed_state == states[i]
            resumed = batches.consumed_rng()
            if i + 1 < 5:
                again = Source().sample_batch(4, resumed)
                assert np.array_equal(again["tokens"], expected[i + 1]["tokens"])
    finally:
        batches.close()


def test_a_failing_source_raises_in_the_loop():
    class Broken:
        def sample_batch(self, batch_size, rng):
            raise OSError("shard vanished")

    batches = Prefetcher(Broken(), 2, np.random.default_rng(0), torch.device("cpu"))
    try:
        with pytest.raises(OSError, match="shard vanished"):
            batches.next()
    finally:
        batches.close()


def test_pad_batch_pads_only_per_position_arrays():
    out = pad_batch({"tokens": np.ones((2, 5), np.int64), "valid": np.ones((2, 5), bool),
                     "label": np.arange(2)}, pad_to=8, max_len=7)
    assert out["tokens"].shape == (2, 7)  # capped by max_len
    assert out["label"].shape == (2,)
    assert out["valid"][:, 5:].sum() == 0


def test_the_time_waited_for_batches_is_counted():
    import time

    class Slow(Source):
        def sample_batch(self, batch_size, rng):
            time.sleep(0.05)
            return super().sample_batch(batch_size, rng)

    slow = Prefetcher(Slow(), 2, np.random.default_rng(0), torch.device("cpu"), depth=1)
    try:
        for _ in range(4):
            slow.next()
        assert slow.waited_s > 0.1  # the loop outran a host that takes 50 ms a batch
    finally:
        slow.close()
    fast = Prefetcher(Source(), 2, np.random.default_rng(0), torch.device("cpu"), depth=3)
    try:
        time.sleep(0.2)  # the queue fills
        before = fast.waited_s
        for _ in range(3):
            fast.next()
        assert fast.waited_s - before < 0.05
    finally:
        fast.close()
