"""The Triton decode-attention kernel against its PyTorch reference, in Triton's interpreter
on the CPU (a subprocess: the interpreter is chosen when a kernel is first built)."""

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


def test_reference_attends_each_row_over_its_own_prefix():
    # against a per-row loop with plain softmax attention, grouped heads expanded
    for _, q, k, v, kc, vc, positions, _ in cases():
        kc0, vc0 = kc.clone(), vc.clone()
        out = decode_attention_reference(q, k, v, kc, vc, positions)
        G = q.size(1) // k.size(1)
        for r, p in enumerate(positions.tolist()):
            if p < 0:  # skipped: cache untouched
                assert torch.equal(kc[r], kc0[r]) and torch.equal(vc[r], vc0[r])
                continue
            keys = torch.cat([kc0[r, :, :p], k[r, :, None]], 1).float()  # (Hkv, p + 1, hd)
            vals = torch.cat([vc0[r, :, :p], v[r, :, None]], 1).float()
            keys, vals = keys.repeat_interleave(G, 0), vals.repeat_interleave(G, 0)
            att = (q[r, :, None].float() @ keys.transpose(-1, -2) / q.size(-1) ** 0.5)
            want = (att.softmax(-1) @ vals)[:, 0]
            torch.testing.assert_close(out[r].float(), want, atol=2e-2, rtol=2e-2)
            assert torch.equal(kc[r, :, p], k[r].to(kc.dtype))
            assert torch.equal(kc[r, :, p + 1 :], kc0[r, :, p + 1 :])


def interpreted() -> None:
    from wavar.model.kernels import decode_attention_triton

    for name, q, k, v, kc, vc, positions, chunk in cases():
        want_k, want_v = kc.clone(), vc.clone()
        want = decode_attention_reference(q, k, v, want_k, want_v, positions)
        # tensor-core tiles (fp32 at tf32x3) and plain products; Triton's interpreter
        # multiplies bf16 tiles wrongly (the GPU check in benchmarks/sample_speed.py --kernel
        # covers them), so bf16 runs the plain products only here
        for dot in (True, False) if q.dtype == torch.float32 else (False,):
            kc2, vc2 = kc.clone(), vc.clone()
            got = decode_attention_triton(q, k, v, kc2, vc2, positions, chunk=chunk, dot=dot)
            tol = 1e-2 if q.dtype == torch.bfloat16 else 1e-5
            torch.testing.assert_close(got.float(), want.float(), atol=tol, rtol=tol,
                                       msg=f"{name} dot={dot}")  # finished rows: zeros
            # the same cache writes, no others
            assert torch.equal(kc2, want_k) and torch.equal(vc2, want_v), name


def run_interpreted(check: str) -> None:
    """Run this module's function ``check`` in a subprocess under Triton's interpreter."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", "import tests.model.test_kernels as t; "
                        f"t.{check}(); print('ok')"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr


def test_triton_kernel_matches_the_reference_in_the_interpreter():
    run_interpreted("interpreted")


def fused_cases():
    """(name, model, cache length, positions, chunk): grouped and plain heads, a width that is
    no power of two, no RoPE, chunked prefixes; random weights everywhere (norms and head too)."""
    from wavar.model.transformer import WaveletGPT, config_from_preset

    for name, overrides, chunk in (
        ("tiny-mha", dict(n_layer=2, n_head=2, n_embd=32, fourier_features=8), None),
        ("gqa4-chunk16", dict(n_layer=2, n_head=4, n_kv_head=1, n_embd=128), 16),
        ("width80-norope", dict(n_layer=1, n_head=5, n_kv_head=1, n_embd=80, rope=False), 16),
    ):
        torch.manual_seed(0)
        model = WaveletGPT(config_from_preset("tiny", **overrides)).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.3)
        yield name, model, 40, torch.tensor([-1, 0, 7, 20, 38, 39]), chunk


def interpreted_fused() -> None:
    from wavar.model.kernels import FusedDecodeStep

    g = torch.Generator().manual_seed(1)
    for name, model, length, t, chunk in fused_cases():
        c, B = model.config, len(t)
        cache = model.new_cache(B, length)
        cache.k.normal_(generator=g)
        cache.v.normal_(generator=g)
        want_cache = type(cache)(cache.k.clone(), cache.v.clone())
        prev = torch.randint(0, c.vocab_size + 1, (B,), generator=g)  # BOS included
        slots = torch.stack([torch.randint(0, n, (B,), generator=g) for n in (
            c.n_planes_max, c.n_channels, c.max_level + 1, 4, c.n_kinds)], 1)
        pos = torch.rand(B, 2, generator=g)
        m_tilde = torch.randint(c.m_tilde_min - 3, c.m_tilde_max + 3, (B,), generator=g)
        prev[1] = -1  # a finished row's token, read as 0 (the model's step needs it clamped)
        want = model.decode_step(want_cache, prev.clamp(min=0), slots, pos, m_tilde, t)
        got = FusedDecodeStep(model, chunk=chunk)(cache, prev, slots, pos, m_tilde, t)
        live = t >= 0
        torch.testing.assert_close(got[live], want[live], atol=1e-4, rtol=1e-4, msg=name)
        # every layer's new key and value, written where the row is, and nowhere else
        torch.testing.assert_close(cache.k, want_cache.k, atol=1e-4, rtol=1e-4, msg=name)
        torch.testing.assert_close(cache.v, want_cache.v, atol=1e-4, rtol=1e-4, msg=name)
        assert torch.equal(cache.k[:, 0], want_cache.k[:, 0]), name  # the skipped row
        # fp16 weights: products at fp16 (TF32's) significands, so within a few 1e-3 of the
        # logits' scale; a misplaced or mis-rounded weight tile is off by O(1)
        half = type(cache)(want_cache.k.clone(), want_cache.v.clone())
        got16 = FusedDecodeStep(model, chunk=chunk, weights="fp16")(half, prev, slots, pos,
                                                                    m_tilde, t)
        scale = float(want[live].abs().max())
        err16 = float((got16 - want)[live].abs().max())
        assert 1e-6 < err16 < 5e-3 * scale, (name, err16, scale)
        assert FusedDecodeStep(model, precision="tf32").weights == "fp16", name  # the default
        assert FusedDecodeStep(model).weights == "fp32", name  # (fp32 products off CUDA)
        drawing_step_matches_logits_then_draw(model, chunk, cache, prev, slots, pos, m_tilde,
                                              t, got, g, name)


def drawing_step_matches_logits_then_draw(model, chunk, cache, prev, slots, pos, m_tilde, t,
                                          logits, g, name) -> None:
    """Rows skipped by ``live`` instead of a negative t give the same logits; a step that draws
    in its last kernel draws what draw_tokens draws from its logits: legal or forced tokens,
    -1 for finished rows, recorded at each row's step, which advances."""
    from wavar.model.kernels import Draw, FusedDecodeStep, draw_tokens

    B, V = len(t), model.config.vocab_size
    step = FusedDecodeStep(model, chunk=chunk)
    live, t_row = t >= 0, t.clamp(min=0)
    legal = torch.randint(1, 2**V, (B,), generator=g)
    noise = torch.empty(B, V).exponential_(generator=g)
    forced = torch.randint(0, V, (B, 50), generator=g)
    forced_len = torch.where(torch.arange(B) % 2 == 0, t_row + 1, 0)  # even rows forced

    def fresh() -> Draw:
        return Draw(legal, noise, live, torch.zeros(B, dtype=torch.long),
                    torch.full((B, 50), -1, dtype=torch.int8), 0.7, forced, forced_len)

    cached = [type(cache)(cache.k.clone(), cache.v.clone()) for _ in range(2)]
    a, b = fresh(), fresh()
    t_a, t_b = t_row.clone(), t_row.clone()
    got = step(cached[0], prev, slots, pos, m_tilde, t_a, live=live)
    torch.testing.assert_close(got[live], logits[live], atol=1e-4, rtol=1e-4, msg=name)
    draw_tokens(got, t_a, a)
    assert step(cached[1], prev, slots, pos, m_tilde, t_b, live=live, draw=b) is None, name
    assert torch.equal(a.tok, b.tok) and torch.equal(a.out, b.out), name
    assert torch.equal(t_a, t_row + 1) and torch.equal(t_b, t_row + 1), name
    rows = torch.arange(B)
    assert torch.equal(a.out[rows, t_row].long(), a.tok), name
    assert (a.tok[~live] == -1).all(), name
    free = live & (forced_len <= t_row)
    assert (((legal >> a.tok.clamp(min=0)) & 1)[free] == 1).all(), name
    pinned = live & ~free
    assert torch.equal(a.tok[pinned], forced[rows, t_row][pinned]), name


def test_fused_step_matches_the_model_in_the_interpreter():
    run_interpreted("interpreted_fused")


def test_fp16_weights_refuse_a_model_beyond_their_range():
    pytest.importorskip("triton")
    from wavar.model.kernels import FusedDecodeStep
    from wavar.model.transformer import WaveletGPT, config_from_preset

    model = WaveletGPT(config_from_preset("tiny", n_layer=1, n_head=2, n_embd=32,
                                          fourier_features=8))
    with torch.no_grad():
        model.blocks[0].mlp.fc.weight[0, 0] = 1e5
    assert FusedDecodeStep(model, precision="tf32").weights == "fp32"  # the default falls back
    with pytest.raises(ValueError, match="fp16's range"):
        FusedDecodeStep(model, weights="fp16")
    with pytest.raises(ValueError, match="'fp32' or 'fp16'"):
        FusedDecodeStep(model, weights="bf16")
