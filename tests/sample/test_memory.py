"""The key/value cache against the device's memory: counted before it is allocated, a generation
that would not fit refused at once, ``wavar sample`` and ``wavar eval`` batching to fit."""

import numpy as np
import pytest

from tests.sample.test_generate import tiny_model
from wavar.cli.main import main as cli
from wavar.errors import SamplingMemoryError
from wavar.sample import planning
from wavar.sample.generate import generate
from wavar.sample.options import SamplingOptions


def free_for(monkeypatch, model, images: int, limit: int | None = None) -> None:
    """Pretend the device has just the free memory for ``images`` unguided rows."""
    row = planning.cache_bytes(model, 1, limit or model.config.max_seq_len)
    free = -(-images * row // planning.CACHE_SHARE) + 1
    monkeypatch.setattr(planning, "free_memory", lambda device: int(free))


def test_cache_bytes_are_what_new_cache_allocates():
    model = tiny_model(shape=(8, 8, 3), n_kv_head=1)
    cache = model.new_cache(5, 300)
    assert planning.cache_bytes(model, 5, 300) == cache.k.nbytes + cache.v.nbytes
    assert planning.cache_bytes(model, 10, 300) == 2 * planning.cache_bytes(model, 5, 300)


def test_images_per_call_counts_the_guided_twins_and_the_token_budget(monkeypatch):
    model = tiny_model()
    free_for(monkeypatch, model, 8)
    n, why = planning.images_per_call(model, SamplingOptions())
    assert n == 8 and "8 images a call" in why and "2,048 positions" in why
    guided, why = planning.images_per_call(model, SamplingOptions(cfg=[1, 2]))
    assert guided == 4 and "unguided twin" in why
    short, _ = planning.images_per_call(model, SamplingOptions(max_tokens=99))
    assert short == 8 * 2049 // 100  # rows of 100 positions where 2,049 were counted
    monkeypatch.setattr(planning, "free_memory", lambda device: None)
    assert planning.images_per_call(model, SamplingOptions())[0] is None


def test_free_memory_of_this_cpu_is_read():
    assert planning.free_memory("cpu") > 2**20  # Linux: MemAvailable
    assert planning.free_memory("meta") is None


def test_generate_refuses_a_batch_that_does_not_fit_before_allocating(monkeypatch):
    model = tiny_model()
    free_for(monkeypatch, model, 4)
    allocated = []
    original = type(model).new_cache
    monkeypatch.setattr(type(model), "new_cache",
                        lambda self, *a, **k: allocated.append(a) or original(self, *a, **k))
    with pytest.raises(SamplingMemoryError, match=r"5 images in one generation: .* 4 images a"):
        generate(model, [0, 1, 2, 0, 1], seed=0)
    assert not allocated
    assert len(generate(model, [0, 1, 2, 0], seed=0, max_tokens=40)) == 4 and allocated


def test_sample_cli_batches_what_does_not_fit(tmp_path, monkeypatch, capsys):
    model = tiny_model()
    model.save_pretrained(tmp_path / "m")
    free_for(monkeypatch, model, 3, limit=40)
    base = ["sample", "--model", str(tmp_path / "m"), "--classes", "all", "--tokens", "40",
            "--seed", "1", "-o", str(tmp_path / "g.png")]
    assert cli([*base, "--n", "2", "--npz", str(tmp_path / "six.npz")]) == 0
    assert "sampling 6 images in batches of 3: " in capsys.readouterr().out
    six = np.load(tmp_path / "six.npz")
    assert list(six["y"]) == [0, 1, 2, 0, 1, 2]
    # the first batch draws what a request of its size draws alone (seed, then seed + 1)
    assert cli([*base, "--n", "1", "--npz", str(tmp_path / "three.npz")]) == 0
    assert "in batches of" not in capsys.readouterr().out
    assert (np.load(tmp_path / "three.npz")["x"] == six["x"][:3]).all()
    free_for(monkeypatch, model, 0, limit=40)
    assert cli([*base, "--n", "1"]) == 2
    assert "not even one image fits" in capsys.readouterr().err


def test_a_planned_batch_survives_the_memory_an_earlier_batch_kept(tmp_path, monkeypatch, capsys):
    """A batch planned once meets a little less free memory after the first batch (the device
    keeps some): generate refuses only above REFUSE_SHARE, so the second batch still runs."""
    model = tiny_model()
    model.save_pretrained(tmp_path / "m")
    row = planning.cache_bytes(model, 1, 40)
    free = [-(-3 * row // planning.CACHE_SHARE) + 1]  # 3 images planned a batch
    monkeypatch.setattr(planning, "free_memory", lambda device: int(free[0]))
    original = planning.rows_that_fit

    def shrinking(*a, **k):  # every look at the memory finds 5% less than the last
        out = original(*a, **k)
        free[0] *= 0.95
        return out

    monkeypatch.setattr(planning, "rows_that_fit", shrinking)
    assert cli(["sample", "--model", str(tmp_path / "m"), "--classes", "all", "--n", "2",
                "--tokens", "40", "--seed", "1", "-o", str(tmp_path / "g.png")]) == 0
    assert "sampling 6 images in batches of 3: " in capsys.readouterr().out
    with pytest.raises(SamplingMemoryError, match=r"90% of it for the cache: 2 images a call"):
        generate(model, [0, 1, 2], seed=0, max_tokens=40)  # by now 3 images do not fit
