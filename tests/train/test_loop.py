"""The training loop: outputs, learning, schedule, exact resume after a kill or a time limit."""

import json
import math

import numpy as np
import pytest
import torch

from tests.train.synthetic_source import SyntheticSource
from wavar.errors import CheckpointError
from wavar.model.transformer import WaveletGPT
from wavar.train import distributed
from wavar.train.checkpoint import load_checkpoint
from wavar.train.config import ConfigError, TrainConfig
from wavar.train.loop import batch_to_device, evaluate, lr_at, train

SOURCE = SyntheticSource()
VAL = SyntheticSource(n=12, seed=1)


def cfg(out_dir, **kw) -> TrainConfig:
    base = dict(out_dir=str(out_dir), model="tiny", model_args={"max_seq_len": 32},
                batch_size=4, max_steps=8, lr=3e-3, min_lr=3e-4, warmup_steps=2,
                eval_every=4, eval_batches=2, ckpt_every=3, log_every=2, device="cpu",
                ema_decay=0.9, codec={"wavelet": "haar"})
    return TrainConfig(**{**base, **kw})


def test_train_writes_metrics_checkpoint_and_published_ema_weights(tmp_path):
    calls = []
    result = train(cfg(tmp_path, sample_every=4), SOURCE, VAL,
                   on_eval=lambda model, step, out: calls.append((step, out, model.training)))
    assert result["step"] == 8 and result["stopped"] == "max_steps"
    assert calls == [(4, tmp_path, False), (8, tmp_path, False)]
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_lines = [x for x in lines if "bits_per_token" in x]
    val_lines = [x for x in lines if "val_bits_per_token" in x]
    assert [x["step"] for x in train_lines] == [2, 4, 6, 8]
    assert [x["step"] for x in val_lines] == [4, 8]
    assert {"lr", "grad_norm", "tokens_per_s", "mfu", "data_wait",
            "elapsed_s"} <= set(train_lines[0])
    assert val_lines[-1]["val_bits_per_image"] > val_lines[-1]["val_bits_per_token"] > 0
    assert load_checkpoint(tmp_path / "ckpt.pt")["step"] == 8
    published = WaveletGPT.from_pretrained(tmp_path / "model")
    assert published.config.codec == {"wavelet": "haar"}
    for (name, p), q in zip(published.named_parameters(), result["ema"].parameters(),
                            strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("batching", [{}, dict(pack_len=64)])
def test_training_lowers_the_validation_code_length(tmp_path, batching):
    result = train(cfg(tmp_path, max_steps=60, lr=1e-2, min_lr=1e-3, eval_every=0,
                       eval_batches=0, ckpt_every=0, log_every=60, **batching), SOURCE, SOURCE)
    n_legal = [bin(int(x)).count("1") for it in SOURCE.items for x in it["legal"]]
    uniform = float(np.mean(np.log2(n_legal)))  # the untrained (zero-head) model's rate
    assert result["val_bits_per_token"] < 0.8 * uniform


def test_packed_validation_measures_what_unpacked_validation_does(tmp_path):
    """With pack_len the validation batches are packed like the training batches (on CUDA
    FlexAttention then skips what the mask hides): the same bits per token and per image."""
    train(cfg(tmp_path / "a", max_steps=4), SOURCE)
    model = WaveletGPT.from_pretrained(tmp_path / "a" / "model").eval()
    info = distributed.DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    unpacked = evaluate(model, VAL, cfg(tmp_path, eval_batches=0), info)
    packed = evaluate(model, VAL, cfg(tmp_path, eval_batches=0, pack_len=64), info)
    assert packed.keys() == unpacked.keys()
    for key, value in unpacked.items():
        assert packed[key] == pytest.approx(value, rel=1e-5), key


def test_lr_schedule_warms_up_then_decays_to_min_lr():
    c = TrainConfig(lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110)
    lrs = [lr_at(s, c) for s in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lrs[60] == pytest.approx(0.55) and lr_at(110, c) == pytest.approx(0.1)
    assert math.isclose(lr_at(500, c), 0.1)


def final_state(out_dir) -> dict:
    return load_checkpoint(out_dir / "ckpt.pt")


def assert_same_run(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    for key in ("model", "ema"):
        for name in a[key]:
            torch.testing.assert_close(a[key][name], b[key][name], rtol=0, atol=0, msg=name)
    for i, s in a["optimizer"]["state"].items():
        for k in s:
            torch.testing.assert_close(s[k], b["optimizer"]["state"][i][k], rtol=0, atol=0)
    assert a["rng"][0]["data"] == b["rng"][0]["data"]
    assert torch.equal(a["rng"][0]["torch"], b["rng"][0]["torch"])


class Killed(Exception):
    pass


def test_killed_run_resumes_into_the_uninterrupted_one(tmp_path):
    kw = dict(model_args={"max_seq_len": 32, "class_dropout": 0.3, "dropout": 0.1},
              sample_every=5)
    train(cfg(tmp_path / "a", **kw), SOURCE, VAL, on_eval=lambda *a: None)

    def die(model, step, out):
        raise Killed  # dies at step 5; the last checkpoint is step 3

    with pytest.raises(Killed):
        train(cfg(tmp_path / "b", **kw), SOURCE, VAL, on_eval=die)
    assert final_state(tmp_path / "b")["step"] == 3
    result = train(cfg(tmp_path / "b", **kw), SOURCE, VAL, on_eval=lambda *a: None)
    assert result["step"] == 8
    assert_same_run(final_state(tmp_path / "a"), final_state(tmp_path / "b"))


@pytest.mark.parametrize("batching", [dict(length_buckets=4), dict(pack_len=64)])
def test_a_killed_run_with_buckets_or_packing_resumes_into_the_uninterrupted_one(tmp_path,
                                                                                 batching):
    kw = dict(model_args={"max_seq_len": 32, "class_dropout": 0.3}, sample_every=5, **batching)
    train(cfg(tmp_path / "a", **kw), SOURCE, VAL, on_eval=lambda *a: None)

    def die(model, step, out):
        raise Killed

    with pytest.raises(Killed):
        train(cfg(tmp_path / "b", **kw), SOURCE, VAL, on_eval=die)
    assert train(cfg(tmp_path / "b", **kw), SOURCE, VAL, on_eval=lambda *a: None)["step"] == 8
    assert_same_run(final_state(tmp_path / "a"), final_state(tmp_path / "b"))


def test_time_limit_stops_with_a_checkpoint_and_chunks_add_up(tmp_path):
    train(cfg(tmp_path / "a", max_steps=5), SOURCE, VAL)
    chunks = 0
    while True:
        result = train(cfg(tmp_path / "b", max_steps=5, time_limit_s=1e-9), SOURCE, VAL)
        chunks += 1
        assert final_state(tmp_path / "b")["step"] == result["step"] == chunks
        if result["stopped"] == "max_steps":
            break
        assert result["stopped"] == "time_limit"
    assert chunks == 5
    assert_same_run(final_state(tmp_path / "a"), final_state(tmp_path / "b"))


def test_resume_refuses_a_different_model(tmp_path):
    train(cfg(tmp_path, max_steps=1), SOURCE)
    with pytest.raises(CheckpointError, match="different model"):
        train(cfg(tmp_path, max_steps=2, model_args={"max_seq_len": 32, "n_layer": 1}), SOURCE)
    result = train(cfg(tmp_path, max_steps=1, resume=False,
                       model_args={"max_seq_len": 32, "n_layer": 1}), SOURCE)
    assert result["step"] == 1


def test_batch_to_device_pads_with_invalid_positions():
    batch = SOURCE.sample_batch(3, np.random.default_rng(0))
    T = batch["tokens"].shape[1]
    out = batch_to_device(batch, torch.device("cpu"), pad_to=64, max_len=1000)
    assert out["tokens"].shape == (3, 64) and out["slots"].shape == (3, 64, 5)
    assert not out["valid"][:, T:].any() and out["label"].shape == (3,)
    assert batch_to_device(batch, torch.device("cpu"), 64, max_len=T)["tokens"].shape[1] == T


def test_resume_on_other_data_keeps_going(tmp_path, capsys):
    # A chunk on another source shard: other data statistics in the codec table, another
    # dataset size; the run resumes (same architecture), says so, and records the new
    # statistics.
    first = cfg(tmp_path, max_steps=4, codec={"wavelet": "haar", "m_tilde_hist": [[1, 2]]})
    train(first, SOURCE, VAL)
    assert "resuming" not in capsys.readouterr().out
    second = cfg(tmp_path, max_steps=6, codec={"wavelet": "haar", "m_tilde_hist": [[3, 4]]})
    result = train(second, SyntheticSource(n=20, seed=5), VAL)
    assert f"resuming {tmp_path / 'ckpt.pt'}: step 4," in capsys.readouterr().out
    assert result["step"] == 6
    saved = load_checkpoint(tmp_path / "ckpt.pt")["model_config"]["codec"]
    assert saved["m_tilde_hist"] == [[3, 4]]
    with pytest.raises(CheckpointError, match="different model"):  # the codec itself must match
        train(cfg(tmp_path, max_steps=8, codec={"wavelet": "bior4.4"}), SOURCE, VAL)


def test_init_from_starts_at_the_published_weights_with_a_fresh_optimizer(tmp_path):
    train(cfg(tmp_path / "a", max_steps=4), SOURCE)
    start = WaveletGPT.from_pretrained(tmp_path / "a" / "model")
    # a recommended sampling setting (the zoo's best models carry one) is not architecture
    start.config.sampling = {"cfg": [1.0, 2.0]}
    start.save_pretrained(tmp_path / "a" / "model")
    # zero steps: the run publishes exactly the weights it started from
    result = train(cfg(tmp_path / "b", max_steps=0, init_from=str(tmp_path / "a" / "model")),
                   SOURCE)
    for (name, p), q in zip(start.named_parameters(), result["model"].parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
    # steps: the optimizer starts fresh (step 0 of the schedule), the weights move on from there
    result = train(cfg(tmp_path / "c", max_steps=2, init_from=str(tmp_path / "a" / "model")),
                   SOURCE)
    state = load_checkpoint(tmp_path / "c" / "ckpt.pt")
    assert state["step"] == 2
    assert all(s["step"] == 2 for s in state["optimizer"]["state"].values())
    moved = [(p - q).abs().max().item() for p, q in
             zip(start.parameters(), result["model"].parameters(), strict=True)]
    assert 0 < max(moved) < 0.1  # near the start, not a fresh init
    with pytest.raises(CheckpointError, match="different model"):
        train(cfg(tmp_path / "d", max_steps=1, init_from=str(tmp_path / "a" / "model"),
                  model_args={"max_seq_len": 32, "n_layer": 1}), SOURCE)


def test_schedule_start_takes_up_an_earlier_sessions_schedule_midway(tmp_path, capsys):
    """A run whose optimizer state stayed on another machine goes on from its weights
    (`init_from`) at its place in the time schedule: the warmup ramps to the cosine's value
    there, not to the peak, and elapsed_s (the curve's x) counts on from it."""
    c = TrainConfig(lr=1.0, min_lr=0.1, warmup_steps=10, budget_s=100, init_from="x",
                    schedule_start_s=50)
    assert lr_at(0, c, 50.0) == pytest.approx(0.055) and lr_at(9, c, 50.0) == pytest.approx(0.55)
    assert lr_at(10, c, 75.0) < lr_at(10, c, 50.0)
    train(cfg(tmp_path / "a", max_steps=4), SOURCE)
    result = train(cfg(tmp_path / "b", max_steps=4, log_every=1, budget_s=1000.0,
                       schedule_start_s=500.0, init_from=str(tmp_path / "a" / "model")), SOURCE)
    assert result["step"] == 4
    assert "the schedule goes on at 500 of budget_s 1000 s" in capsys.readouterr().out
    lines = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    logged = [x for x in lines if "lr" in x]
    mid = 3e-4 + 0.5 * (3e-3 - 3e-4)  # the cosine at half the budget: the warmup's target
    assert logged[0]["lr"] == pytest.approx(mid / 2, rel=1e-2)
    assert logged[1]["lr"] == pytest.approx(mid, rel=1e-2)
    assert all(500 <= x["elapsed_s"] < 600 for x in lines)
    for bad in (dict(schedule_start_s=50.0, budget_s=100.0),  # no weights to go on from
                dict(schedule_start_s=100.0, budget_s=100.0, init_from="x"),  # nothing left
                dict(schedule_start_s=50.0, init_from="x")):  # no time schedule
        with pytest.raises(ConfigError, match="schedule_start_s"):
            TrainConfig(**bad)


def test_init_from_a_coarser_threshold_of_the_same_language(tmp_path, capsys):
    """A finer final threshold extends every sequence by whole bit-planes (an embedded code),
    so a published model may start a run at a finer threshold, with a longer max_seq_len, and
    says so; a coarser threshold, a shorter max_seq_len or another wavelet are refused."""
    haar = {"wavelet": "haar", "final_threshold": 0.125}
    train(cfg(tmp_path / "a", max_steps=2, codec=haar), SOURCE)
    start = WaveletGPT.from_pretrained(tmp_path / "a" / "model")
    finer = cfg(tmp_path / "b", max_steps=0, init_from=str(tmp_path / "a" / "model"),
                codec={**haar, "final_threshold": 0.0625}, model_args={"max_seq_len": 48})
    result = train(finer, SOURCE)
    assert "at final threshold 0.125, 0.0625 here" in capsys.readouterr().out
    for p, q in zip(start.parameters(), result["model"].parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    for codec, args in (({**haar, "final_threshold": 0.25}, {"max_seq_len": 48}),
                        ({**haar, "final_threshold": 0.0625}, {"max_seq_len": 16}),
                        ({"wavelet": "bior4.4", "final_threshold": 0.0625}, {"max_seq_len": 48})):
        with pytest.raises(CheckpointError, match="different model"):
            train(cfg(tmp_path / "c", max_steps=0, init_from=str(tmp_path / "a" / "model"),
                      codec=codec, model_args=args), SOURCE)


def test_snapshots_publish_the_ema_weights_as_time_passes(tmp_path):
    # every step is past a (tiny) snapshot interval: one snapshot per step, named by time
    result = train(cfg(tmp_path, max_steps=3, snapshot_every_s=1e-9), SOURCE)
    snaps = sorted((tmp_path / "snapshots").iterdir())
    assert [s.name.split("-")[1] for s in snaps] == ["step000001", "step000002", "step000003"]
    last = WaveletGPT.from_pretrained(snaps[-1])
    for p, q in zip(last.parameters(), result["ema"].parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    # a long interval: only the end of the run publishes one
    train(cfg(tmp_path / "long", max_steps=3, snapshot_every_s=1e6), SOURCE)
    assert [s.name.split("-")[1] for s in (tmp_path / "long" / "snapshots").iterdir()] == \
        ["step000003"]
