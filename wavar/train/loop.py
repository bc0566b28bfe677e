"""The training loop: plain PyTorch, the same on the CPU, one GPU, or N GPUs under torchrun.

Per step: draw a batch (each rank its own, from its own seeded generator), forward under bf16
autocast on CUDA, loss = grammar-masked bits per token, backward, clip, AdamW with linear warmup
and cosine decay, EMA update. Every so often: log a line to ``out_dir/metrics.jsonl``, evaluate
the EMA weights (bits per token and per image), checkpoint, call ``on_eval`` (sample grids).

``metrics.jsonl`` (rank 0) holds two kinds of lines: training ``{step, bits_per_token, lr,
grad_norm, tokens_per_s, mfu, elapsed_s}``, averaged since the previous line, with tokens/s
and MFU per GPU counting valid tokens only (padding is waste; MFU is null on the CPU); and
validation ``{step, val_bits_per_token, val_bits_per_image, elapsed_s}``.

A run killed at any moment resumes from ``out_dir/ckpt.pt`` and takes exactly the steps the
uninterrupted run would have taken (same batches, same dropout, same schedule). ``time_limit_s``
makes a run stop cleanly with a checkpoint, so that training can proceed in chunks. A chunk may
bring other training data (the data generator draws indices for whatever size the source has
now; the data statistics in the model config are the new chunk's); validation then comes from
``data_val``, which the CLI takes from the test split or, with ``val_holdout = N``, from the
last N training images (left out of training).
"""

from __future__ import annotations

import copy
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from wavar.errors import CheckpointError
from wavar.model.transformer import WaveletGPT, loss_bits
from wavar.train import distributed
from wavar.train.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from wavar.train.config import ConfigError, TrainConfig
from wavar.train.packing import row_multiple
from wavar.train.prefetch import Prefetcher, host_batch


class DataSource(Protocol):
    """What :func:`train` needs from a data source (the token-shard loader, a test fake)."""

    def sample_batch(self, batch_size: int, rng: np.random.Generator,
                     buckets: int = 1) -> dict[str, np.ndarray]:
        ...  # ``buckets`` is passed only when > 1 (length-bucketed batches)

    def iter_batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        ...

    def __len__(self) -> int:
        ...


def lr_at(step: int, cfg: TrainConfig, train_s: float = 0.0) -> float:
    """Learning rate of update ``step`` (0-based): linear warmup, then cosine to ``min_lr``.

    With ``cfg.budget_s`` the cosine runs over training wall time (``train_s`` so far) instead
    of steps, so runs can be given equal GPU time. The warmup ramps to the cosine's value at
    that time: ``cfg.lr`` for a run's start, less for one that takes up a schedule midway
    (``schedule_start_s``).
    """
    if cfg.budget_s > 0:
        progress = min(1.0, train_s / cfg.budget_s)
    else:
        progress = min(1.0, max(0, step - cfg.warmup_steps)
                       / max(1, cfg.max_steps - cfg.warmup_steps))
    lr = cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)
    if step < cfg.warmup_steps:
        return lr * (step + 1) / cfg.warmup_steps
    return lr


def batch_to_device(batch: dict[str, np.ndarray], device: torch.device,
                    pad_to: int = 1, max_len: int | None = None,
                    pack_len: int = 0) -> dict[str, torch.Tensor]:
    """numpy batch -> tensors on ``device``, padded as :func:`pad_batch` says, or with
    ``pack_len`` packed into rows of that many positions as training packs them
    (:func:`host_batch`)."""
    tensors = host_batch(batch, pad_to, max_len, pack_len, row_multiple(device))
    return {k: v.to(device, non_blocking=True) for k, v in tensors.items()}


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, for all parameters at once."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)


@torch.no_grad()
def evaluate(model: nn.Module, data: DataSource, cfg: TrainConfig,
             info: distributed.DistInfo) -> dict[str, float]:
    """Bits per token and per image of ``data`` (the first ``eval_batches`` batches, or all).

    Batches are dealt round-robin to the ranks and the sums reduced, so N GPUs split the work.
    With ``cfg.pack_len`` they are packed like the training batches (the same loss, no
    padding; on CUDA FlexAttention skips what a window or another sequence hides, where the
    unpacked path computes a dense mask over the longest sequence's positions).
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=info.device)  # bits, tokens, images
    for i, np_batch in enumerate(data.iter_batches(cfg.batch_size)):
        if cfg.eval_batches and i >= cfg.eval_batches:
            break
        if i % info.world_size != info.rank:
            continue
        batch = batch_to_device(np_batch, info.device, pack_len=cfg.pack_len)
        with _autocast(info.device):
            bits, n = loss_bits(model(batch), batch)
        sums += torch.stack([bits.double(), n.double(),
                             torch.tensor(len(np_batch["label"]), device=info.device).double()])
    distributed.all_reduce_sum(sums, info)
    model.train(was_training)
    bits, tokens, images = sums.tolist()
    return {"val_bits_per_token": bits / max(tokens, 1.0),
            "val_bits_per_image": bits / max(images, 1.0)}


def train(cfg: TrainConfig, data_train: DataSource, data_val: DataSource | None = None,
          on_eval: Callable[[nn.Module, int, Path], None] | None = None) -> dict[str, Any]:
    """Train (or resume training) a :class:`WaveletGPT` as ``cfg`` says.

    Parameters
    ----------
    cfg : TrainConfig
    data_train, data_val : DataSource
        ``sample_batch(batch_size, rng)`` for training; ``iter_batches(batch_size)`` for
        validation (optional).
    on_eval : callable, optional
        ``on_eval(ema_model, step, out_dir)``, on rank 0 every ``sample_every`` steps and at the
        end, e.g. to write sample grids. It runs on forked RNG state, so it cannot change the
        course of training.

    Returns
    -------
    dict
        ``step``, ``stopped`` ("max_steps" or "time_limit"), ``elapsed_s``, the last
        ``bits_per_token`` (train, this rank), the last ``val_bits_per_token`` and
        ``val_bits_per_image`` if evaluated, and the trained ``model`` and ``ema`` modules.
    """
    info, created = distributed.setup(cfg.device)
    try:
        return _train(cfg, data_train, data_val, on_eval, info)
    finally:
        distributed.cleanup(created)


def _train(cfg: TrainConfig, data_train: DataSource, data_val: DataSource | None,
           on_eval: Callable[[nn.Module, int, Path], None] | None,
           info: distributed.DistInfo) -> dict[str, Any]:
    t0 = time.time()
    device, out = info.device, Path(cfg.out_dir)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = WaveletGPT(cfg.model_config()).to(device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    optimizer = torch.optim.AdamW(model.optim_groups(cfg.weight_decay), lr=cfg.lr,
                                  betas=cfg.betas, fused=device.type == "cuda")
    # Each rank draws its own batches and dropout masks.
    data_rng = np.random.default_rng([cfg.seed, info.rank])
    torch.manual_seed(cfg.seed * 1_000_003 + 1 + info.rank)
    step, elapsed_before = _resume(out / "ckpt.pt", cfg, model, ema, optimizer, data_rng, info)
    if step and info.is_main:  # a chunk, or a run after a kill: say it goes on, not anew
        print(f"resuming {out / 'ckpt.pt'}: step {step}, {elapsed_before:.0f} s of the run "
              f"before this one")
    if step == 0 and cfg.init_from:
        said = _init_from(cfg.init_from, model, ema)
        if said and info.is_main:
            print(said)
        if cfg.schedule_start_s:  # an earlier session's run goes on: one schedule, one curve
            elapsed_before = cfg.schedule_start_s
            if info.is_main:
                print(f"init_from with schedule_start_s {cfg.schedule_start_s:.0f}: the "
                      f"schedule goes on at {elapsed_before:.0f} of budget_s {cfg.budget_s:.0f} "
                      f"s (lr {lr_at(cfg.warmup_steps, cfg, elapsed_before):.2e} after a "
                      f"{cfg.warmup_steps}-step warmup; a fresh optimizer)")

    def elapsed() -> float:  # wall time of the whole run, across resumes
        return elapsed_before + time.time() - t0


    pad_to = cfg.pad_to if device.type == "cuda" else 1  # few shapes for compile
    if cfg.pack_len and cfg.pack_len < model.config.max_seq_len + 1:
        raise ConfigError(f"pack_len {cfg.pack_len} cannot hold the longest sequence: it "
                          f"needs max_seq_len + 1 = {model.config.max_seq_len + 1} positions")
    if cfg.pack_len and device.type == "cuda" and model.config.dropout > 0 and info.is_main:
        print(f"packed rows on CUDA: dropout {model.config.dropout} on the residual branches "
              f"and embeddings only (FlexAttention drops no attention weights)")
    if cfg.compile:
        _compile_blocks(model, pad_to)
    train_model: nn.Module = model
    if info.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None)
    train_model.train()

    bar = tqdm(total=cfg.max_steps, initial=step, disable=not info.is_main, dynamic_ncols=True,
               desc=f"train {out.name}")
    snapshot_at = _next_snapshot(elapsed_before, cfg.snapshot_every_s) \
        if cfg.snapshot_every_s else math.inf
    # Batches are drawn ahead on a thread (pinned memory on CUDA): the host no longer waits
    # for each copy, so it queues the next step while the GPU runs this one.
    batches = Prefetcher(data_train, cfg.batch_size, data_rng, device, pad_to,
                         model.config.max_seq_len, buckets=cfg.length_buckets,
                         pack_len=cfg.pack_len, row_multiple=row_multiple(device))
    result: dict[str, Any] = {}
    stopped = "max_steps"
    acc_bits = torch.zeros((), device=device)
    acc_tokens = torch.zeros((), device=device)
    acc_flops, acc_valid, t_log = 0.0, 0, time.time()
    waited_before = 0.0
    try:
        while step < cfg.max_steps:
            lr = lr_at(step, cfg, elapsed())
            for group in optimizer.param_groups:
                group["lr"] = lr
            np_batch, batch = batches.next()
            with _autocast(device):
                bits, n = loss_bits(train_model(batch), batch)
            loss = bits / n.clamp_min(1)  # bits per token of this rank's batch
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
            optimizer.step()
            # EMA warm-up (as in many EMA implementations): early on, decay = (1+s)/(10+s), so
            # the average does not drag the random init along for ~1/(1-decay) steps.
            ema_update(ema, model, min(cfg.ema_decay, (1 + step) / (10 + step)))
            step += 1
            bar.update(1)

            acc_bits += bits.detach()
            acc_tokens += n
            n_valid = int(np_batch["valid"].sum())
            acc_valid += n_valid
            # attention FLOPs as at the batch's padded length (packed: its longest sequence)
            t_attn = np_batch["tokens"].shape[1] if cfg.pack_len else batch["tokens"].shape[1]
            acc_flops += model.flops_per_token(t_attn + 1) * n_valid
            final = step == cfg.max_steps or (cfg.budget_s > 0 and distributed.agree(
                elapsed() >= cfg.budget_s, info))
            if step % cfg.log_every == 0 or final:
                dt = max(time.time() - t_log, 1e-9)
                result["bits_per_token"] = (acc_bits / acc_tokens.clamp_min(1)).item()
                record = {"step": step, "bits_per_token": result["bits_per_token"], "lr": lr,
                          "grad_norm": grad_norm.item(), "tokens_per_s": acc_valid / dt,
                          "mfu": acc_flops / dt / cfg.peak_flops if device.type == "cuda" else None,
                          # share of the interval spent waiting for the prefetch thread's batch
                          "data_wait": (batches.waited_s - waited_before) / dt,
                          "elapsed_s": elapsed()}
                if info.is_main:
                    _log(out, record)
                    bar.set_postfix(bpt=f"{record['bits_per_token']:.4f}", lr=f"{lr:.2e}")
                acc_bits.zero_()
                acc_tokens.zero_()
                acc_flops, acc_valid, t_log = 0.0, 0, time.time()
                waited_before = batches.waited_s

            if data_val is not None and (final or (cfg.eval_every and step % cfg.eval_every == 0)):
                result.update(evaluate(ema, data_val, cfg, info))
                if info.is_main:
                    _log(out, {"step": step, "val_bits_per_token": result["val_bits_per_token"],
                               "val_bits_per_image": result["val_bits_per_image"],
                               "elapsed_s": elapsed()})
            # Rank 0's clock decides for all, or the ranks could part ways at a collective.
            out_of_time = cfg.time_limit_s > 0 and distributed.agree(
                time.time() - t0 > cfg.time_limit_s, info)
            if final or out_of_time or (cfg.ckpt_every and step % cfg.ckpt_every == 0):
                _save(out / "ckpt.pt", cfg, step, elapsed(), model, ema, optimizer,
                      batches.consumed_rng(), info)
            # every run end (finished or out of time) publishes the EMA weights and samples them
            if (final or out_of_time) and info.is_main:
                ema.save_pretrained(out / "model")  # the published weights are the EMA's
            if cfg.snapshot_every_s and info.is_main:
                snapshot_at = _snapshot(out, ema, step, elapsed(), snapshot_at,
                                        cfg.snapshot_every_s, final)
            if on_eval is not None and info.is_main and (
                    final or out_of_time or (cfg.sample_every and step % cfg.sample_every == 0)):
                with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                    on_eval(ema, step, out)
            if final:
                if step < cfg.max_steps:
                    stopped = "budget"
                break
            if out_of_time:
                stopped = "time_limit"
                break
    finally:
        batches.close()
    bar.close()
    result.update(step=step, stopped=stopped, elapsed_s=elapsed(), model=model, ema=ema)
    return result


def _compile_blocks(model: WaveletGPT, pad_to: int) -> None:
    """``torch.compile`` each transformer block in place, not the whole model.

    The blocks are one module type, so they share one compiled graph per padded length:
    compiling costs one block's time, not n_layer blocks' (the whole 8-layer model compiled
    took ~150 s of a 420 s budget on an H200, a few padded lengths at ~25 s each). The ops
    around the blocks (embeddings, head, masked loss) run eagerly. Static shapes: inductor's
    dynamic-shape backward failed on some lengths (torch 2.11, "shape [1537, 128] is invalid").
    """
    lengths = min(256, model.config.max_seq_len // pad_to + 2)  # padded lengths there can be
    dynamo = torch._dynamo.config
    dynamo.cache_size_limit = max(dynamo.cache_size_limit, lengths)
    for block in model.blocks:
        block.compile(dynamic=False)


def _autocast(device: torch.device):
    # bf16 autocast on CUDA (no loss scaling needed); plain fp32 on the CPU.
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def _log(out: Path, record: dict[str, Any]) -> None:
    # Append and close each time: a killed run leaves every line it logged. After a resume, the
    # steps redone since the last checkpoint appear twice; the later lines are the ones that
    # led to the final weights.
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def _save(path: Path, cfg: TrainConfig, step: int, elapsed_s: float, model: nn.Module,
          ema: nn.Module,
          optimizer: torch.optim.Optimizer, data_rng: np.random.Generator,
          info: distributed.DistInfo) -> None:
    rng = distributed.gather_objects(capture_rng(data_rng), info)  # every rank's generators
    if not info.is_main:
        return
    save_checkpoint(path, {
        "step": step, "elapsed_s": elapsed_s, "model": model.state_dict(), "ema": ema.state_dict(),
        "optimizer": optimizer.state_dict(), "rng": rng,
        "world_size": info.world_size, "train_config": cfg.to_dict(),
        "model_config": model.config.to_dict(),
    })


#: Statistics of the training images recorded in the model config's codec table for the
#: sampler. A run resumed on other images (chunks on rotating shards) keeps the new ones.
DATA_STATISTICS = ("m_tilde_min", "m_tilde_hist", "ll_bank")


def _architecture(model_config: dict[str, Any]) -> dict[str, Any]:
    """A model config without the data statistics: what must match to resume."""
    codec = {k: v for k, v in model_config.get("codec", {}).items() if k not in DATA_STATISTICS}
    return {**model_config, "codec": codec, "sampling": None}  # settings, not architecture


def _init_from(name_or_path: str, model: WaveletGPT, ema: nn.Module) -> str:
    """Start ``model`` and ``ema`` from a published model's weights (a zoo name or folder).
    The published model may speak the same language at a coarser final threshold (see
    :func:`_finer_language`); returns what the caller should say about it ("" otherwise)."""
    source = WaveletGPT.from_pretrained(name_or_path)  # float16 zoo weights come back as fp32
    have, want = _architecture(source.config.to_dict()), _architecture(model.config.to_dict())
    finer = have != want and _finer_language(have, want)
    if have != want and not finer:
        raise CheckpointError(f"init_from={name_or_path!r} holds a different model "
                              f"({source.config.to_dict()}) from the one configured "
                              f"({model.config.to_dict()})")
    model.load_state_dict(source.state_dict())
    ema.load_state_dict(source.state_dict())
    return f"init_from={name_or_path!r}: {finer}" if finer else ""


def _finer_language(have: dict[str, Any], want: dict[str, Any]) -> str:
    """Why a model of config ``have`` may start a run of config ``want``, or "": ``want`` is the
    same model over the same wavelet language at a finer final threshold. That code is
    embedded: its sequences begin with the coarser code's whole sequence (same m~, same
    tokens), then add bit-planes, so the published model has learnt this language's first
    planes. Only ``max_seq_len`` may grow with it; it shapes no weight (RoPE's tables are
    computed, not stored)."""
    t_have = have["codec"].get("final_threshold")
    t_want = want["codec"].get("final_threshold")
    if t_have is None or t_want is None or not t_want < t_have \
            or want["max_seq_len"] < have["max_seq_len"]:
        return ""

    def rest(config: dict[str, Any]) -> dict[str, Any]:
        return {**config, "max_seq_len": None,
                "codec": {**config["codec"], "final_threshold": None}}

    if rest(have) != rest(want):
        return ""
    return (f"a model of the same language at final threshold {t_have:g}, {t_want:g} here: its "
            f"sequences are this language's first planes; the finer planes are new to it")


def _snapshot(out: Path, ema: nn.Module, step: int, elapsed_s: float, due_s: float,
              every_s: float, final: bool) -> float:
    """Publish the EMA weights to out/snapshots/ once the run's wall time reaches ``due_s`` (and
    at the end); return the next due time. Names sort by time: ``s000600-step004812``."""
    if elapsed_s < due_s and not final:
        return due_s
    ema.save_pretrained(out / "snapshots" / f"s{int(elapsed_s):06d}-step{step:06d}")
    return _next_snapshot(elapsed_s, every_s)


def _next_snapshot(elapsed_s: float, every_s: float) -> float:
    """The first multiple of ``every_s`` after ``elapsed_s`` (a resumed run's too)."""
    return (elapsed_s // every_s + 1) * every_s


def _resume(path: Path, cfg: TrainConfig, model: WaveletGPT, ema: nn.Module,
            optimizer: torch.optim.Optimizer, data_rng: np.random.Generator,
            info: distributed.DistInfo) -> tuple[int, float]:
    """Load ``path`` into the run if it exists and ``cfg.resume``; return the step to go on
    from and the wall time spent before it."""
    if not (cfg.resume and path.exists()):
        return 0, 0.0
    state = load_checkpoint(path)  # on the CPU; load_state_dict copies to the device
    if _architecture(state["model_config"]) != _architecture(model.config.to_dict()):
        raise CheckpointError(f"{path} holds a different model ({state['model_config']}) from "
                              f"the one configured ({model.config.to_dict()}); use another "
                              f"out_dir or resume=false")
    model.load_state_dict(state["model"])
    ema.load_state_dict(state["ema"])
    optimizer.load_state_dict(state["optimizer"])
    if len(state["rng"]) == info.world_size:
        restore_rng(state["rng"][info.rank], data_rng)
    else:  # a different number of GPUs: fresh, still deterministic, streams per rank
        warnings.warn(f"{path} was written by {len(state['rng'])} ranks, now {info.world_size}: "
                      "data order will differ from an uninterrupted run", stacklevel=3)
        data_rng.bit_generator.state = np.random.default_rng(
            [cfg.seed, info.rank, state["step"]]).bit_generator.state
    return int(state["step"]), float(state["elapsed_s"])
