"""save_pretrained / from_pretrained: round trip, corrupted files, zoo fallback."""

import json
import sys
import types

import pytest
import torch

from wavar.errors import CheckpointError
from wavar.model import weights
from wavar.model.transformer import WaveletGPT, config_from_preset


def make_model() -> WaveletGPT:
    torch.manual_seed(0)
    cfg = config_from_preset("tiny", max_seq_len=32, codec={"wavelet": "bior4.4", "levels": 4})
    model = WaveletGPT(cfg)
    torch.nn.init.normal_(model.head.weight, std=0.5)
    return model.eval()


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    B, T = 2, 16
    return dict(tokens=torch.randint(0, 7, (B, T), generator=g),
                slots=torch.randint(0, 3, (B, T, 5), generator=g),
                pos=torch.rand(B, T, 2, generator=g), m_tilde=torch.tensor([3, -2]),
                label=torch.tensor([1, 7]), valid=torch.ones(B, T, dtype=torch.bool))


def test_round_trip_gives_identical_logits(tmp_path):
    model = make_model()
    model.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["codec"] == {"wavelet": "bior4.4", "levels": 4}
    loaded = WaveletGPT.from_pretrained(tmp_path / "m")
    assert loaded.config == model.config and not loaded.training
    torch.testing.assert_close(loaded(batch()), model(batch()), rtol=0, atol=0)
    again = WaveletGPT.from_pretrained(str(tmp_path / "m" / "model.safetensors"))
    torch.testing.assert_close(again(batch()), model(batch()), rtol=0, atol=0)


def test_truncated_weights_raise_checkpoint_error(tmp_path):
    make_model().save_pretrained(tmp_path)
    f = tmp_path / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        WaveletGPT.from_pretrained(tmp_path)


def test_missing_or_bad_files_raise_checkpoint_error(tmp_path):
    make_model().save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"n_layers": 2}')
    with pytest.raises(CheckpointError, match="not a valid model config"):
        WaveletGPT.from_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        WaveletGPT.from_pretrained(tmp_path)


def test_weights_that_do_not_fit_the_config_raise(tmp_path):
    make_model().save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["n_layer"] = 3
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="does not fit"):
        WaveletGPT.from_pretrained(tmp_path)


def test_weights_past_the_shard_size_go_into_shards_and_load_back(tmp_path):
    """Hugging Face's sharded layout (for zoo models past git's 20 MB a file): several files
    under the limit and an index, loading to the same model; saving again in the other layout
    leaves no stale file."""
    model = make_model()
    total = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    model.save_pretrained(tmp_path, max_shard_mb=total / 4e6)
    index = json.loads((tmp_path / weights.INDEX).read_text())
    shards = sorted(tmp_path.glob("model-*-of-*.safetensors"))
    assert len(shards) >= 4 and not (tmp_path / weights.SINGLE).exists()
    assert sorted(set(index["weight_map"].values())) == [f.name for f in shards]
    assert set(index["weight_map"]) == set(model.state_dict())
    assert index["metadata"]["total_size"] == total
    biggest = max(v.numel() * v.element_size() for v in model.state_dict().values())
    assert all(f.stat().st_size < max(total / 4, biggest) + 2000 for f in shards)  # + header
    assert weights.files(tmp_path) == [tmp_path / weights.INDEX] + shards
    loaded = WaveletGPT.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded(batch()), model(batch()), rtol=0, atol=0)
    sharded = weights.digest(tmp_path)

    model.save_pretrained(tmp_path)  # fits one file: the shards and the index go
    assert weights.files(tmp_path) == [tmp_path / weights.SINGLE]
    assert not list(tmp_path.glob("model-*")) and not (tmp_path / weights.INDEX).exists()
    assert weights.digest(tmp_path) != sharded
    model.save_pretrained(tmp_path, max_shard_mb=total / 4e6)  # and back: the single file goes
    assert not (tmp_path / weights.SINGLE).exists() and weights.digest(tmp_path) == sharded


def test_a_damaged_set_of_shards_is_a_clear_error(tmp_path):
    model = make_model()
    total = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    model.save_pretrained(tmp_path, max_shard_mb=total / 3e6)
    shards = sorted(tmp_path.glob("model-*-of-*.safetensors"))
    index_text = (tmp_path / weights.INDEX).read_text()

    keep = shards[1].read_bytes()
    shards[1].write_bytes(keep[: len(keep) // 2])
    with pytest.raises(CheckpointError, match=f"{shards[1].name} is truncated or corrupted"):
        WaveletGPT.from_pretrained(tmp_path)
    shards[1].unlink()
    for read in (WaveletGPT.from_pretrained, weights.digest):
        with pytest.raises(CheckpointError, match=f"{shards[1].name} is missing"):
            read(tmp_path)
    shards[1].write_bytes(keep)

    index = json.loads(index_text)
    moved = next(iter(index["weight_map"]))  # the index says another shard holds it
    index["weight_map"][moved] = shards[-1].name
    (tmp_path / weights.INDEX).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="does not hold the tensors"):
        WaveletGPT.from_pretrained(tmp_path)
    index["weight_map"][moved] = "../elsewhere.safetensors"  # only files of this folder
    (tmp_path / weights.INDEX).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="not a safetensors index"):
        WaveletGPT.from_pretrained(tmp_path)
    (tmp_path / weights.INDEX).write_text(index_text[:40])
    with pytest.raises(CheckpointError, match="not a safetensors index"):
        WaveletGPT.from_pretrained(tmp_path)
    (tmp_path / weights.INDEX).write_text(index_text)
    torch.testing.assert_close(WaveletGPT.from_pretrained(tmp_path)(batch()), model(batch()))


def test_a_name_goes_to_the_zoo(tmp_path, monkeypatch):
    make_model().save_pretrained(tmp_path / "weights")
    zoo = types.ModuleType("wavar.zoo")
    monkeypatch.setitem(sys.modules, "wavar.zoo", zoo)
    with pytest.raises(CheckpointError, match="model zoo is unavailable"):
        WaveletGPT.from_pretrained("mnist-small")
    zoo.resolve = lambda name: tmp_path / "weights"
    assert WaveletGPT.from_pretrained("mnist-small").config.n_layer == 2


ZOO = ("mnist", "fashion-mnist", "mnist-fine", "fashion-mnist-fine", "mnist-small",
       "fashion-mnist-small", "fashion-mnist-raster", "fashion-mnist-raster-medium",
       "mnist-raster-medium", "cifar10", "cifar10-lossless")


@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_model_loads_and_matches_its_hash_and_dataset(name):
    """What the zoo ships is what its table promises: weights whose sha256 is the table's
    (resolve verifies it), fp16 files under 20 MB, the dataset's classes and image shape."""
    from wavar.data.datasets import DATASETS
    from wavar.zoo import MODELS, resolve

    assert set(MODELS) == set(ZOO)  # a new entry gets its own case: add it to ZOO
    folder = resolve(name)  # raises CheckpointError on a hash mismatch
    assert all(f.stat().st_size < 20e6 for f in weights.files(folder))  # git's limit a file
    model = WaveletGPT.from_pretrained(name)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    codec = model.config.codec
    info = DATASETS[MODELS[name].dataset]
    assert codec["classes"] == list(info.classes)
    assert tuple(codec["image_shape"]) == info.shape
    assert model.config.num_classes == len(codec["classes"])
