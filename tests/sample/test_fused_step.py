"""The fused decode step and the Triton draw against their PyTorch originals (the model's
``decode_step``, :func:`wavar.sample.draw.draw`), in Triton's interpreter on the CPU (a
subprocess: the interpreter is chosen when a kernel is first built)."""

import pytest
import torch

from tests.model.test_kernels import run_interpreted


def fused_cases():
    """(name, model, cache length, steps t): grouped and plain heads, a width that is no power
    of two, no RoPE, an attention window; random weights everywhere (norms and head too)."""
    from wavar.model.transformer import WaveletGPT, config_from_preset

    for name, overrides in (
        ("tiny-mha", dict(n_layer=2, n_head=2, n_embd=32, fourier_features=8)),
        ("gqa4", dict(n_layer=2, n_head=4, n_kv_head=1, n_embd=128)),
        ("width80-norope", dict(n_layer=1, n_head=5, n_kv_head=1, n_embd=80, rope=False)),
        ("gqa4-window8", dict(n_layer=2, n_head=4, n_kv_head=1, n_embd=128, attn_window=8)),
    ):
        torch.manual_seed(0)
        model = WaveletGPT(config_from_preset("tiny", **overrides)).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.3)
        yield name, model, 40, torch.tensor([-1, 0, 7, 20, 38, 39])


def interpreted_fused() -> None:
    from wavar.sample.fused_step import FusedDecodeStep
    from wavar.sample.steps import StepInputs

    g = torch.Generator().manual_seed(1)
    for name, model, length, t in fused_cases():
        c, B = model.config, len(t)
        cache = model.new_cache(B, length)
        cache.k.normal_(generator=g)
        cache.v.normal_(generator=g)
        want_cache = type(cache)(cache.k.clone(), cache.v.clone())
        prev = torch.randint(0, c.vocab_size + 1, (B,), generator=g)  # BOS included
        inputs = StepInputs(torch.stack([torch.randint(0, n, (B,), generator=g) for n in (
            c.n_planes_max, c.n_channels, c.max_level + 1, 4, c.n_kinds)], 1),
            torch.rand(B, 2, generator=g))
        m_tilde = torch.randint(c.m_tilde_min - 3, c.m_tilde_max + 3, (B,), generator=g)
        prev[1] = -1  # a finished row's token, read as 0 (the model's step needs it clamped)
        want = model.decode_step(want_cache, prev.clamp(min=0), inputs.slots, inputs.pos,
                                 m_tilde, t)
        got = FusedDecodeStep(model)(cache, prev, inputs, m_tilde, t)
        live = t >= 0
        torch.testing.assert_close(got[live], want[live], atol=1e-4, rtol=1e-4, msg=name)
        # every layer's new key and value, written where the row is, and nowhere else
        torch.testing.assert_close(cache.k, want_cache.k, atol=1e-4, rtol=1e-4, msg=name)
        torch.testing.assert_close(cache.v, want_cache.v, atol=1e-4, rtol=1e-4, msg=name)
        assert torch.equal(cache.k[:, 0], want_cache.k[:, 0]), name  # the skipped row
        # fp16 weights: products at fp16 (TF32's) significands, so within a few 1e-3 of the
        # logits' scale; a misplaced or mis-rounded weight tile is off by O(1)
        half = type(cache)(want_cache.k.clone(), want_cache.v.clone())
        got16 = FusedDecodeStep(model, weights="fp16")(half, prev, inputs, m_tilde, t)
        scale = float(want[live].abs().max())
        err16 = float((got16 - want)[live].abs().max())
        assert 1e-6 < err16 < 5e-3 * scale, (name, err16, scale)
        assert FusedDecodeStep(model, precision="tf32").weights == "fp16", name  # the default
        assert FusedDecodeStep(model).weights == "fp32", name  # (fp32 products off CUDA)
        drawing_step_matches_logits_then_draw(model, cache, prev, inputs, m_tilde, t, got, g,
                                              name)


def drawing_step_matches_logits_then_draw(model, cache, prev, inputs, m_tilde, t, logits, g,
                                          name) -> None:
    """Rows skipped by ``live`` instead of a negative t give the same logits; a step that draws
    in its last kernel draws what draw_tokens draws from its logits, and that is what the
    PyTorch draw draws with the same noise: legal or forced tokens, -1 for finished rows,
    recorded at each row's step, which advances."""
    from wavar.sample.draw import Draw, ForcedPrefix, draw, draw_tokens
    from wavar.sample.fused_step import FusedDecodeStep
    from wavar.sample.options import SamplingOptions

    B, V = len(t), model.config.vocab_size
    step = FusedDecodeStep(model)
    live, t_row = t >= 0, t.clamp(min=0)
    legal = torch.randint(1, 2**V, (B,), generator=g)
    forced = ForcedPrefix(torch.randint(0, V, (B, 50), generator=g),
                          torch.where(torch.arange(B) % 2 == 0, t_row + 1, 0))  # even rows

    def fresh() -> Draw:
        return Draw.plain(legal, live, torch.zeros(B, dtype=torch.long),
                          torch.full((B, 50), -1, dtype=torch.int8), V, 0.7, forced,
                          torch.Generator().manual_seed(5))

    cached = [type(cache)(cache.k.clone(), cache.v.clone()) for _ in range(2)]
    a, b = fresh(), fresh()
    t_a, t_b = t_row.clone(), t_row.clone()
    got = step(cached[0], prev, inputs, m_tilde, t_a, live=live)
    torch.testing.assert_close(got[live], logits[live], atol=1e-4, rtol=1e-4, msg=name)
    draw_tokens(got, t_a, a)
    assert step(cached[1], prev, inputs, m_tilde, t_b, live=live, draw=b) is None, name
    assert torch.equal(a.tok, b.tok) and torch.equal(a.out, b.out), name
    assert torch.equal(t_a, t_row + 1) and torch.equal(t_b, t_row + 1), name
    rows = torch.arange(B)
    assert torch.equal(a.out[rows, t_row].long(), a.tok), name
    assert (a.tok[~live] == -1).all(), name
    free = live & (forced.lengths <= t_row)
    assert (((legal >> a.tok.clamp(min=0)) & 1)[free] == 1).all(), name
    pinned = live & ~free
    assert torch.equal(a.tok[pinned], forced.tokens[rows, t_row][pinned]), name
    # the compiled twin: the PyTorch draw, from the same generator state, draws the same
    pytorch = draw(got, legal, SamplingOptions(temperature=0.7),
                   torch.Generator().manual_seed(5), t_row, forced)
    assert torch.equal(pytorch[live], a.tok[live]), name


@pytest.mark.slow
def test_fused_step_matches_the_model_in_the_interpreter():
    run_interpreted("interpreted_fused", "tests.sample.test_fused_step")


def test_the_fused_step_states_which_models_it_serves():
    from wavar.model.transformer import WaveletGPT, config_from_preset
    from wavar.sample.fused_step import FusedDecodeStep, fused_step_limit

    def config(**overrides):
        return config_from_preset("tiny", **{"fourier_features": 8, **overrides})

    assert fused_step_limit(config(n_embd=128, n_head=4)) is None
    assert fused_step_limit(config(n_embd=224, n_head=4)) == "n_embd 224 > 128"
    assert fused_step_limit(config(n_embd=96, n_head=4)) == \
        "head size 24 is not a power of two >= 16"
    with pytest.raises(ValueError, match="head size 24"):
        FusedDecodeStep(WaveletGPT(config(n_embd=96, n_head=4, n_kv_head=1)))


def test_fp16_weights_refuse_a_model_beyond_their_range():
    pytest.importorskip("triton")
    from wavar.model.transformer import WaveletGPT, config_from_preset
    from wavar.sample.fused_step import FusedDecodeStep

    model = WaveletGPT(config_from_preset("tiny", n_layer=1, n_head=2, n_embd=32,
                                          fourier_features=8))
    with torch.no_grad():
        model.blocks[0].mlp.fc.weight[0, 0] = 1e5
    assert FusedDecodeStep(model, precision="tf32").weights == "fp32"  # the default falls back
    with pytest.raises(ValueError, match="fp16's range"):
        FusedDecodeStep(model, weights="fp16")
    with pytest.raises(ValueError, match="'fp32' or 'fp16'"):
        FusedDecodeStep(model, weights="bf16")
