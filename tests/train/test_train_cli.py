"""`wavar train` end to end on a tiny cached dataset: horizontal-flip augmentation (issue 19)."""

import json

import numpy as np
import pytest

from wavar.cli import train as cli
from wavar.codec import WaveletCodec
from wavar.data.datasets import _store
from wavar.data.shards import TokenDataset
from wavar.errors import DatasetError


@pytest.fixture
def toy(tmp_path, monkeypatch):
    monkeypatch.setenv("WAVAR_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (14, 8, 8), dtype=np.uint8)
    x[:, :, :3] //= 4  # left and right differ, so a mirror is another image
    y = np.arange(14) % 2
    _store("toy", {"train": (x[:10], y[:10]), "test": (x[10:], y[10:])}, ["a", "b"], "test")
    config = tmp_path / "tiny.toml"
    config.write_text("""dataset = "toy"
model = "tiny"
device = "cpu"
batch_size = 4
max_steps = 2
warmup_steps = 1
eval_every = 0
ckpt_every = 0
log_every = 1
compile = false
[codec]
wavelet = "haar"
final_threshold = 0.25
""")
    return tmp_path, config, x, y


def test_hflip_trains_on_the_mirrored_training_images_too(toy, capsys):
    tmp, config, x, y = toy
    out = tmp / "run"
    assert cli.main(["--config", str(config), "--no-samples", f"out_dir={out}", "hflip=true",
                     "val_holdout=3"]) == 0
    assert "augmentation: 7 training images and their 7 mirror images" in capsys.readouterr().out
    codec = WaveletCodec("haar", final_threshold=0.25)
    mirrored = TokenDataset.load("toy", codec, cli.FLIPPED, tokenize_missing=False)
    train = TokenDataset.load("toy", codec, "train", tokenize_missing=False)
    assert len(mirrored) == len(train) == 10  # all coded; the held-out 3 not trained on
    for i in (0, 6):
        seq = codec.encode(x[i, :, ::-1])  # the flipped image's own code, not flipped tokens
        a, e = mirrored.offsets[i], mirrored.offsets[i + 1]
        assert np.array_equal(mirrored.tokens[a:e], seq.tokens)
        assert not np.array_equal(seq.tokens, codec.encode(x[i]).tokens)
    assert mirrored.label.tolist() == y[:10].tolist()
    metrics = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 2


def test_concat_joins_sequences_and_refuses_other_codecs(toy):
    tmp, config, x, y = toy
    a = TokenDataset.from_sequences(*_coded(WaveletCodec("haar", final_threshold=0.25), x[:3]))
    b = TokenDataset.from_sequences(*_coded(WaveletCodec("haar", final_threshold=0.25), x[3:5]))
    both = a.concat(b)
    assert len(both) == 5
    batch = both.batch(np.array([3, 0]))
    assert np.array_equal(batch["tokens"][0, : b.lengths[0]], b.batch(np.array([0]))["tokens"][0])
    other = TokenDataset.from_sequences(*_coded(WaveletCodec("haar", final_threshold=0.5), x[:2]))
    with pytest.raises(DatasetError, match="different codecs"):
        a.concat(other)


def _coded(codec, images):
    seqs = [codec.encode(im) for im in images]
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])])
    return (codec, images.shape[1:], np.concatenate([s.tokens for s in seqs]), offsets,
            np.array([s.header.m_tilde for s in seqs]), np.zeros(len(seqs), np.int64))


def test_the_wall_limit_counts_the_set_up(toy, capsys, monkeypatch):
    """`wall_limit_s` is the command's limit: a set-up that took longer leaves the loop one
    step, which it checkpoints (the next call resumes), instead of a whole chunk; with time to
    spare, `time_limit_s` (the loop's own) still decides."""
    tmp, config, _, _ = toy
    clock = iter([0.0, 1000.0])  # the command's start, then the end of its set-up
    monkeypatch.setattr(cli, "monotonic", lambda: next(clock))
    out = tmp / "run"
    assert cli.main(["--config", str(config), "--no-samples", f"out_dir={out}",
                     "max_steps=50", "wall_limit_s=600"]) == 0
    said = capsys.readouterr().out
    assert "wall_limit_s 600: 1000 s of set-up; the training loop stops after 0 s" in said
    assert "step 1 (time_limit)" in said and (out / "ckpt.pt").exists()
    clock = iter([0.0, 10.0])
    assert cli.main(["--config", str(config), "--no-samples", f"out_dir={tmp / 'run2'}",
                     "wall_limit_s=600", "time_limit_s=300"]) == 0
    said = capsys.readouterr().out
    assert "10 s of set-up; the training loop stops after 300 s" in said
    assert "step 2 (max_steps)" in said
