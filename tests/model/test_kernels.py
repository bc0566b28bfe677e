"""The Triton decode-attention kernel against its PyTorch reference, in Triton's interpreter
on the CPU (a subprocess: the interpreter is chosen when a kernel is first built)."""

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wavar.model.kernels import decode_attention_reference

ROOT = Path(__file__).resolve().parents[2]


def cases(device: str = "cpu"):
    """(name, q, k, v, k_cache, v_cache, positions, chunk): GQA groups of 1, 4 and 5 query
    heads (padded), head sizes 16 to 64, prefixes in chunks, bf16, skipped and fresh rows."""
    g = torch.Generator().manual_seed(0)
    for name, (B, H, n_kv, hd, L, chunk, dtype) in {
        "mha": (3, 2, 2, 16, 40, None, torch.float32),
        "gqa4": (5, 4, 1, 32, 70, None, torch.float32),
        "gqa5-chunk32": (3, 5, 1, 64, 130, 32, torch.float32),
        "chunk16-short": (2, 2, 2, 32, 20, 16, torch.float32),
        "bf16-chunk16": (4, 4, 2, 16, 40, 16, torch.bfloat16),
    }.items():
        def rand(*shape, dtype=dtype):
            return torch.randn(*shape, generator=g).to(dtype).to(device)

        positions = torch.randint(1, L, (B,), generator=g)
        positions[0], positions[-1] = -1, 0  # a finished row; a row at its first position
        yield (name, rand(B, H, hd), rand(B, n_kv, hd), rand(B, n_kv, hd), rand(B, n_kv, L, hd),
               rand(B, n_kv, L, hd), positions.to(device), chunk)


WINDOWS = (0, 1, 7, 33)  # 0: the whole prefix; 1: the new position and position 0 only


def test_reference_attends_each_row_over_its_own_prefix():
    # against a per-row loop with plain softmax attention, grouped heads expanded; with a
    # window, over the row's last `window` positions and position 0 (the class prefix)
    for window in WINDOWS:
        check_reference(window)


def check_reference(window: int) -> None:
    for _, q, k, v, kc, vc, positions, _ in cases():
        kc0, vc0 = kc.clone(), vc.clone()
        out = decode_attention_reference(q, k, v, kc, vc, positions, window=window)
        G = q.size(1) // k.size(1)
        for r, p in enumerate(positions.tolist()):
            if p < 0:  # skipped: cache untouched
                assert torch.equal(kc[r], kc0[r]) and torch.equal(vc[r], vc0[r])
                continue
            old = [i for i in range(p) if not window or i == 0 or p - i < window]
            keys = torch.cat([kc0[r, :, old], k[r, :, None]], 1).float()  # (Hkv, seen, hd)
            vals = torch.cat([vc0[r, :, old], v[r, :, None]], 1).float()
            keys, vals = keys.repeat_interleave(G, 0), vals.repeat_interleave(G, 0)
            att = (q[r, :, None].float() @ keys.transpose(-1, -2) / q.size(-1) ** 0.5)
            want = (att.softmax(-1) @ vals)[:, 0]
            torch.testing.assert_close(out[r].float(), want, atol=2e-2, rtol=2e-2)
            assert torch.equal(kc[r, :, p], k[r].to(kc.dtype))
            assert torch.equal(kc[r, :, p + 1 :], kc0[r, :, p + 1 :])


def interpreted() -> None:
    from wavar.model.kernels import decode_attention_triton

    for (name, q, k, v, kc, vc, positions, chunk), window in itertools.product(cases(),
                                                                                WINDOWS):
        want_k, want_v = kc.clone(), vc.clone()
        want = decode_attention_reference(q, k, v, want_k, want_v, positions, window=window)
        # tensor-core tiles (fp32 at tf32x3) and plain products; Triton's interpreter
        # multiplies bf16 tiles wrongly (the GPU check in benchmarks/sample_speed.py --kernel
        # covers them), so bf16 runs the plain products only here
        for dot in (True, False) if q.dtype == torch.float32 else (False,):
            kc2, vc2 = kc.clone(), vc.clone()
            got = decode_attention_triton(q, k, v, kc2, vc2, positions, chunk=chunk, dot=dot,
                                          window=window)
            tol = 1e-2 if q.dtype == torch.bfloat16 else 1e-5
            torch.testing.assert_close(got.float(), want.float(), atol=tol, rtol=tol,
                                       msg=f"{name} dot={dot} window={window}")
            # (finished rows: zeros)
            # the same cache writes, no others
            assert torch.equal(kc2, want_k) and torch.equal(vc2, want_v), name


def run_interpreted(check: str, module: str = __name__) -> None:
    """Run ``module``'s function ``check`` in a subprocess under Triton's interpreter."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", f"import {module} as t; t.{check}(); print('ok')"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr


@pytest.mark.slow
def test_triton_kernel_matches_the_reference_in_the_interpreter():
    run_interpreted("interpreted")


def test_the_kernel_states_which_head_sizes_it_tiles():
    from wavar.model.kernels import attention_kernel_limit, decode_attention_triton

    assert [attention_kernel_limit(hd) for hd in (16, 32, 64, 128)] == [None] * 4
    for hd in (8, 24, 56, 96):
        assert attention_kernel_limit(hd) == f"head size {hd} is not a power of two >= 16"
    q, kv = torch.zeros(2, 4, 56), torch.zeros(2, 1, 56)
    with pytest.raises(ValueError, match="head size 56"):
        decode_attention_triton(q, kv, kv, torch.zeros(2, 1, 8, 56), torch.zeros(2, 1, 8, 56),
                                torch.tensor([0, 3]))


def test_row_attention_takes_the_reference_where_the_kernel_cannot_tile(monkeypatch):
    """A head size of 56 (configs/mnist-large.toml): on a CUDA machine with Triton the
    model's decode attention takes the reference, not the kernel (which refused it, and with
    it every default GPU generation of such a model); and its decode step runs."""
    from types import SimpleNamespace

    from wavar.model import kernels
    from wavar.model.transformer import WaveletGPT, config_from_preset

    monkeypatch.setattr(kernels, "triton_available", lambda: True)
    for hd, kernel in ((56, False), (24, False), (64, True), (32, True)):
        q = SimpleNamespace(is_cuda=True, size=lambda dim, hd=hd: hd)
        assert kernels.use_attention_kernel(q) is kernel, hd
    assert not kernels.use_attention_kernel(torch.zeros(1, 2, 64))  # CPU tensors

    model = WaveletGPT(config_from_preset("tiny", n_layer=1, n_head=4, n_kv_head=2,
                                          n_embd=224, fourier_features=8)).eval()
    cache = model.new_cache(3, 16)
    t = torch.tensor([2, -1, 5])
    logits = model.decode_step(cache, torch.tensor([1, 0, 3]), torch.zeros(3, 5, dtype=torch.long),
                               torch.rand(3, 2), torch.full((3,), 5), t)
    assert logits.shape == (3, model.config.vocab_size) and torch.isfinite(logits).all()
