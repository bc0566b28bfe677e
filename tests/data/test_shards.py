"""Token shards: they follow the images they were made from; holding out validation."""

from pathlib import Path

import numpy as np
import pytest

from wavar.codec import WaveletCodec
from wavar.data.datasets import ImageDataset
from wavar.data.shards import TokenDataset, tokenize
from wavar.errors import DatasetError


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WAVAR_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def images(n: int, seed: int) -> ImageDataset:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)
    return ImageDataset("toy", x, rng.integers(0, 3, n), ["a", "b", "c"])


def test_shards_are_remade_when_the_images_change() -> None:
    codec = WaveletCodec("haar", final_threshold=2.0**-2)
    first, second = images(7, seed=0), images(5, seed=1)
    tokenize(first, codec, shard_size=4, progress=False)
    tokenize(second, codec, shard_size=4, progress=False)  # e.g. the next chunk's shard
    got = TokenDataset.load("toy", codec, tokenize_missing=False)
    want = codec.encode_batch(second.x)
    assert len(got) == 5
    np.testing.assert_array_equal(got.label, second.y)
    np.testing.assert_array_equal(got.tokens, np.concatenate([s.tokens for s in want]))


def test_holdout_splits_off_the_last_sequences() -> None:
    codec = WaveletCodec("haar", final_threshold=2.0**-2)
    data = images(6, seed=2)
    tokenize(data, codec, progress=False)
    full = TokenDataset.load("toy", codec, tokenize_missing=False)
    train, val = full.holdout(2)
    assert (len(train), len(val)) == (4, 2)
    np.testing.assert_array_equal(val.label, data.y[4:])
    for part, idx in ((train, [0, 3]), (val, [0, 1])):
        for i in idx:
            j = i if part is train else i + 4
            np.testing.assert_array_equal(part.batch(np.array([i]))["tokens"][0],
                                          full.batch(np.array([j]))["tokens"][0, :full.lengths[j]])
            np.testing.assert_array_equal(part.slots[part.offsets[i]:part.offsets[i + 1]],
                                          full.slots[full.offsets[j]:full.offsets[j + 1]])
    with pytest.raises(DatasetError, match="hold out"):
        full.holdout(6)
