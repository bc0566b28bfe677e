"""The same train() under two gloo processes on the CPU: ranks stay in sync, rank 0 writes."""

import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

from tests.train.synthetic_source import SyntheticSource
from wavar.train.checkpoint import load_checkpoint
from wavar.train.config import TrainConfig
from wavar.train.loop import train

# spawns two processes, each importing torch and wavar afresh (5 s on an idle 2-core machine)
pytestmark = pytest.mark.slow

WORLD = 2


def _worker(rank: int, port: int, out_dir: str, result_dir: str) -> None:
    # What torchrun would set.
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    cfg = TrainConfig(out_dir=out_dir, model="tiny", model_args={"max_seq_len": 32},
                      batch_size=4, max_steps=3, warmup_steps=1, lr=3e-3, eval_every=0,
                      eval_batches=0, ckpt_every=2, log_every=1, device="cpu")
    result = train(cfg, SyntheticSource(), SyntheticSource(n=10, seed=1))
    torch.save({"model": result["model"].state_dict(), "ema": result["ema"].state_dict(),
                "bits_per_token": result["bits_per_token"],
                "val_bits_per_token": result["val_bits_per_token"]},
               os.path.join(result_dir, f"rank{rank}.pt"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_train_in_sync(tmp_path):
    out_dir, result_dir = tmp_path / "run", tmp_path / "results"
    result_dir.mkdir()
    ctx = mp.start_processes(_worker, args=(_free_port(), str(out_dir), str(result_dir)),
                             nprocs=WORLD, start_method="spawn", join=False)
    deadline = time.time() + 120
    try:
        while not ctx.join(timeout=1):
            assert time.time() < deadline, "DDP workers hung"
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
    r0, r1 = (torch.load(result_dir / f"rank{r}.pt") for r in range(WORLD))
    for key in ("model", "ema"):
        for name in r0[key]:
            torch.testing.assert_close(r0[key][name], r1[key][name], rtol=0, atol=0, msg=name)
    assert r0["bits_per_token"] != r1["bits_per_token"]  # each rank drew its own batches
    assert r0["val_bits_per_token"] == r1["val_bits_per_token"]  # reduced over ranks
    ckpt = load_checkpoint(out_dir / "ckpt.pt")
    assert ckpt["step"] == 3 and ckpt["world_size"] == WORLD and len(ckpt["rng"]) == WORLD
    assert ckpt["rng"][0]["data"] != ckpt["rng"][1]["data"]
    assert sorted(p.name for p in out_dir.iterdir()) == ["ckpt.pt", "metrics.jsonl", "model"]
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4  # rank 0 alone logs: 3 steps + the final validation
