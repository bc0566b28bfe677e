"""Length-bucketed batches: less padding, the same chance for every sequence, and the same
loss as the sequences unpadded (issue 18)."""

import numpy as np
import torch

from tests.train.synthetic_source import SyntheticSource
from wavar.data.shards import bucketed_indices
from wavar.model.transformer import WaveletGPT, config_from_preset, loss_bits


def test_one_bucket_is_the_plain_uniform_draw():
    lengths = np.arange(100)
    a = bucketed_indices(lengths, 8, np.random.default_rng(3), buckets=1)
    b = np.random.default_rng(3).integers(0, 100, 8)
    assert np.array_equal(a, b)


def test_buckets_pad_less_and_keep_every_sequence_equally_likely():
    rng = np.random.default_rng(0)
    lengths = rng.integers(500, 3100, 400)  # a long-tailed spread, as Fashion-MNIST's
    plain, bucketed = [], []
    counts = np.zeros(len(lengths))
    for _ in range(3000):
        p = bucketed_indices(lengths, 16, rng, buckets=1)
        b = bucketed_indices(lengths, 16, rng, buckets=8)
        plain.append(lengths[p].max() - lengths[p].mean())
        bucketed.append(lengths[b].max() - lengths[b].mean())
        np.add.at(counts, b, 1)
    assert np.mean(bucketed) < 0.25 * np.mean(plain)  # padding per row, in tokens
    # each sequence ~ 3000 * 16 / 400 = 120 times; the shortest and longest tenth as often as
    # the middle (a window that slid over sorted draws would starve the ends)
    order = np.argsort(lengths)
    ends = np.concatenate([counts[order[:40]], counts[order[-40:]]]).mean()
    middle = counts[order[180:220]].mean()
    assert abs(ends / middle - 1) < 0.1
    assert abs(counts.mean() - 120) < 1e-9


def test_a_padded_batch_costs_the_bits_of_its_sequences_alone():
    source = SyntheticSource(n=6, min_len=5, max_len=20, seed=1)
    cfg = config_from_preset("tiny", num_classes=10, max_seq_len=32, vocab_size=7)
    torch.manual_seed(0)
    model = WaveletGPT(cfg).eval()
    with torch.no_grad():
        model.head.weight.normal_(0, 0.5)

    def tensors(batch):
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}

    index = np.arange(6)
    together = tensors(source._collate(list(index)))
    assert together["valid"].sum() < together["valid"].numel()  # there is padding
    with torch.no_grad():
        bits, n = loss_bits(model(together), together)
        alone = [loss_bits(model(t), t) for t in (tensors(source._collate([i])) for i in index)]
    assert int(n) == sum(int(m) for _, m in alone)
    torch.testing.assert_close(bits, sum(b for b, _ in alone), rtol=1e-5, atol=1e-4)
