"""A small in-memory data source with the token-shard loader's contract, for tests.

Each token's legal set is random (never empty); the target is the first legal token at or after
(label + plane) mod 7, so there is something to learn from the label and the slot.
"""

from collections.abc import Iterator

import numpy as np

from wavar.data.shards import bucketed_indices

VOCAB = 7


class SyntheticSource:
    def __init__(self, n: int = 48, min_len: int = 6, max_len: int = 24, seed: int = 0,
                 num_classes: int = 10) -> None:
        g = np.random.default_rng(seed)
        self.items = []
        for _ in range(n):
            T = int(g.integers(min_len, max_len + 1))
            label = int(g.integers(0, num_classes))
            slots = np.stack([np.arange(T) // 4, g.integers(0, 3, T), g.integers(0, 5, T),
                              g.integers(0, 4, T), g.integers(0, 4, T)], axis=-1)
            legal = g.integers(1, 2**VOCAB, size=T)
            tokens = np.empty(T, dtype=np.int64)
            for t in range(T):
                v = (label + slots[t, 0]) % VOCAB
                while not legal[t] >> v & 1:
                    v = (v + 1) % VOCAB
                tokens[t] = v
            self.items.append(dict(tokens=tokens, slots=slots.astype(np.int64),
                                   pos=g.random((T, 2)).astype(np.float32),
                                   legal=legal.astype(np.int64), label=label,
                                   m_tilde=int(g.integers(-8, 17))))

    def __len__(self) -> int:
        return len(self.items)

    def _collate(self, idx: list[int]) -> dict[str, np.ndarray]:
        items = [self.items[i] for i in idx]
        B, T = len(items), max(len(it["tokens"]) for it in items)
        out = dict(tokens=np.zeros((B, T), np.int64), slots=np.zeros((B, T, 5), np.int64),
                   pos=np.zeros((B, T, 2), np.float32), legal=np.zeros((B, T), np.int64),
                   valid=np.zeros((B, T), bool), m_tilde=np.array([it["m_tilde"] for it in items]),
                   label=np.array([it["label"] for it in items]))
        for b, it in enumerate(items):
            n = len(it["tokens"])
            for key in ("tokens", "slots", "pos", "legal"):
                out[key][b, :n] = it[key]
            out["valid"][b, :n] = True
        return out

    def sample_batch(self, batch_size: int, rng: np.random.Generator,
                     buckets: int = 1) -> dict[str, np.ndarray]:
        lengths = np.array([len(it["tokens"]) for it in self.items])
        return self._collate(list(bucketed_indices(lengths, batch_size, rng, buckets)))

    def iter_batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(self), batch_size):
            yield self._collate(list(range(start, min(start + batch_size, len(self)))))
