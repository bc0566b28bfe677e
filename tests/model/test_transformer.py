"""WaveletGPT: grammar-masked code length, KV-cache equivalence, conditioning, learning."""

import math

import numpy as np
import pytest
import torch

from wavar.model.config import ModelConfig
from wavar.model.transformer import (
    PRESETS,
    KVCache,
    WaveletGPT,
    config_from_preset,
    loss_bits,
    mask_logits,
    token_bits,
)

VOCAB = 7


def random_batch(B: int = 3, T: int = 24, seed: int = 0, pad: bool = True,
                 num_classes: int = 10) -> dict[str, torch.Tensor]:
    """A batch of the data contract: random legal masks with the target's bit set."""
    g = np.random.default_rng(seed)
    legal = g.integers(1, 2**VOCAB, size=(B, T))
    tokens = np.zeros((B, T), dtype=np.int64)
    for b in range(B):
        for t in range(T):
            tokens[b, t] = g.choice([v for v in range(VOCAB) if legal[b, t] >> v & 1])
    lengths = g.integers(T // 2, T + 1, size=B) if pad else np.full(B, T)
    lengths[0] = T
    valid = np.arange(T)[None] < lengths[:, None]
    slots = np.stack([g.integers(0, 12, (B, T)), g.integers(0, 3, (B, T)),
                      g.integers(0, 6, (B, T)), g.integers(0, 4, (B, T)),
                      g.integers(0, 4, (B, T))], axis=-1)
    batch = dict(tokens=np.where(valid, tokens, 0), slots=slots * valid[..., None],
                 pos=g.random((B, T, 2)).astype(np.float32), legal=np.where(valid, legal, 0),
                 valid=valid, m_tilde=g.integers(-8, 17, size=B),
                 label=g.integers(0, num_classes, size=B))
    return {k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()}


def tiny(**kw) -> WaveletGPT:
    torch.manual_seed(0)
    model = WaveletGPT(config_from_preset("tiny", max_seq_len=64, **kw))
    # The head starts at zero (uniform over legal tokens); give it weights so tests see logits.
    torch.nn.init.normal_(model.head.weight, std=0.5)
    return model.eval()


def test_masked_loss_is_the_code_length_computed_by_hand():
    model, batch = tiny(), random_batch()
    raw = model({k: v for k, v in batch.items() if k != "legal"}).detach().numpy()
    expected, n = 0.0, 0
    for b in range(raw.shape[0]):
        for t in range(raw.shape[1]):
            if not batch["valid"][b, t]:
                continue
            legal = [v for v in range(VOCAB) if int(batch["legal"][b, t]) >> v & 1]
            z = raw[b, t, legal].astype(np.float64)
            logp = z - np.log(np.exp(z - z.max()).sum()) - z.max()
            expected -= logp[legal.index(int(batch["tokens"][b, t]))] / math.log(2)
            n += 1
    total, count = loss_bits(model(batch), batch)
    assert int(count) == n
    assert total.item() == pytest.approx(expected, rel=1e-5)
    assert model.bits_per_sequence(batch).sum().item() == pytest.approx(expected, rel=1e-5)


def test_illegal_tokens_get_minus_inf_and_padding_stays_finite():
    batch = random_batch()
    logits = tiny()(batch)
    assert logits.shape == (3, 24, VOCAB)
    bit = (batch["legal"][..., None] >> torch.arange(VOCAB)) & 1
    valid = batch["valid"][..., None].expand_as(logits)
    assert torch.isneginf(logits[valid & (bit == 0)]).all()
    assert torch.isfinite(logits[valid & (bit == 1)]).all()
    assert torch.isfinite(logits[~valid]).all()
    assert torch.isfinite(token_bits(logits, batch)).all()


def test_mask_logits_uses_bit_v_for_token_v():
    logits = torch.zeros(1, 1, VOCAB)
    out = mask_logits(logits, torch.tensor([[0b0100101]]))
    assert torch.isfinite(out[0, 0]).tolist() == [True, False, True, False, False, True, False]


def test_zero_head_starts_at_the_uniform_law_over_legal_tokens():
    torch.manual_seed(0)
    model, batch = WaveletGPT(config_from_preset("tiny", max_seq_len=64)), random_batch()
    n_legal = torch.tensor([[bin(int(x)).count("1") for x in row] for row in batch["legal"]])
    expected = torch.where(batch["valid"], torch.log2(n_legal.float()), 0.0).sum()
    assert loss_bits(model(batch), batch)[0].item() == pytest.approx(expected.item(), rel=1e-5)


def test_logits_are_causal():
    model, batch = tiny(), random_batch(pad=False)
    batch["legal"][:] = 2**VOCAB - 1
    changed = {k: v.clone() for k, v in batch.items()}
    changed["tokens"][:, 10] = (changed["tokens"][:, 10] + 1) % VOCAB  # input of step 11
    changed["slots"][:, 12, 2] += 1  # input of step 12
    base, out = model(batch), model(changed)
    torch.testing.assert_close(out[:, :11], base[:, :11], rtol=0, atol=0)
    assert not torch.allclose(out[:, 11], base[:, 11])


def test_a_window_limits_what_a_position_sees():
    # one layer, a window of 4: the input of step 12 reaches the logits of tokens 12..15 and
    # no later ones; the class prefix reaches every token, however far
    model, batch = tiny(n_layer=1, attn_window=4), random_batch(pad=False)
    batch["legal"][:] = 2**VOCAB - 1
    changed = {k: v.clone() for k, v in batch.items()}
    changed["slots"][:, 12, 2] += 1
    base, out = model(batch), model(changed)
    torch.testing.assert_close(out[:, :12], base[:, :12], rtol=0, atol=0)
    assert all(not torch.allclose(out[:, t], base[:, t]) for t in range(12, 16))
    torch.testing.assert_close(out[:, 16:], base[:, 16:], rtol=0, atol=0)
    changed = {k: v.clone() for k, v in batch.items()}
    changed["label"] = (changed["label"] + 1) % 10
    assert not torch.allclose(model(changed)[:, -1], base[:, -1])
    # and without a window the change reaches the last token
    model = tiny(n_layer=1)
    changed = {k: v.clone() for k, v in batch.items()}
    changed["slots"][:, 12, 2] += 1
    assert not torch.allclose(model(changed)[:, -1], model(batch)[:, -1])


@pytest.mark.parametrize("rope,n_kv_head,window", [(True, 0, 0), (False, 0, 0), (True, 1, 0),
                                                   (True, 1, 5)])
@pytest.mark.parametrize("n_known", [0, 7])
def test_kv_cache_gives_the_full_forward_logits(rope, n_kv_head, window, n_known):
    model = tiny(rope=rope, n_kv_head=n_kv_head, attn_window=window)
    batch = random_batch(pad=False, seed=1)
    unmasked = {k: v for k, v in batch.items() if k != "legal"}
    full = model(unmasked)  # (B, T, V)
    B, T = batch["tokens"].shape
    tok, slots, pos, m = batch["tokens"], batch["slots"], batch["pos"], batch["m_tilde"]
    cache = model.new_cache(B, max_len=T)
    known = tok[:, :n_known] if n_known else None
    out = [model.prefill(cache, batch["label"], m, slots[:, :n_known + 1], pos[:, :n_known + 1],
                         tokens=known)]
    for t in range(n_known + 1, T):
        step = torch.tensor(t) if t % 2 else t  # ints and 0-d tensors both work
        out.append(model.decode_step(cache, tok[:, t - 1], slots[:, t], pos[:, t], m, step))
    torch.testing.assert_close(torch.stack(out, 1), full[:, n_known:], atol=1e-5, rtol=1e-5)


def two_prefilled_caches(seed: int, window: int = 0):
    """A one-KV-head model, a batch, and two caches holding the same prefix (to compare two
    ways of stepping)."""
    model, batch = tiny(n_kv_head=1, attn_window=window), random_batch(pad=False, seed=seed)
    B, T = batch["tokens"].shape
    caches = [model.new_cache(B, max_len=T) for _ in range(2)]
    for c in caches:
        model.prefill(c, batch["label"], batch["m_tilde"], batch["slots"][:, :1],
                      batch["pos"][:, :1])
    return model, batch, caches


def test_compiled_decode_step_writes_each_layers_cache_in_place():
    # torch.compile (dynamic shapes, as the GPU sampler may use it) around the cached-attention
    # op: same logits and same cache as eager, over a span view of the cache
    model, batch, caches = two_prefilled_caches(seed=2)
    tok, slots, pos, m = batch["tokens"], batch["slots"], batch["pos"], batch["m_tilde"]
    steps = [model.decode_step, torch.compile(model.decode_step, dynamic=True)]
    for t in range(1, 4):
        out = [step(KVCache(c.k[..., :16, :], c.v[..., :16, :]), tok[:, t - 1], slots[:, t],
                    pos[:, t], m, torch.tensor(t)) for step, c in zip(steps, caches, strict=True)]
        torch.testing.assert_close(out[1], out[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(caches[1].k, caches[0].k, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(caches[1].v, caches[0].v, atol=1e-5, rtol=1e-5)
    # prefix + step 0 at 0..1, steps 1..3 at 2..4, nothing after
    assert caches[0].k[:, :, :, 5:].abs().sum() == 0 and caches[0].k[:, :, :, 4].abs().sum() > 0


@pytest.mark.parametrize("compiled,window", [(False, 0), (True, 0), (False, 3)])
def test_decode_step_with_a_step_per_row_matches_the_shared_step(compiled, window):
    # rows at their own cache positions (the GPU sampler's Triton path; here its PyTorch
    # reference): the same logits as the shared step, and a row at step -1 is skipped, its
    # cache untouched, while the others go on
    model, batch, caches = two_prefilled_caches(seed=3, window=window)
    B = batch["tokens"].size(0)
    tok, slots, pos, m = batch["tokens"], batch["slots"], batch["pos"], batch["m_tilde"]
    rowwise = torch.compile(model.decode_step, fullgraph=True) if compiled else model.decode_step
    for t in range(1, 8 if window else 6):
        steps = torch.full((B,), t)
        steps[0] = t if t < 3 else -1  # row 0 finished after token 2
        shared = model.decode_step(caches[0], tok[:, t - 1], slots[:, t], pos[:, t], m, t)
        rows = rowwise(caches[1], tok[:, t - 1], slots[:, t], pos[:, t], m, steps)
        torch.testing.assert_close(rows[1:], shared[1:], atol=1e-5, rtol=1e-5)
        if t < 3:
            torch.testing.assert_close(rows[0], shared[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(caches[1].k[:, 1:], caches[0].k[:, 1:])
    torch.testing.assert_close(caches[1].v[:, 1:], caches[0].v[:, 1:])
    assert caches[1].k[:, 0, :, 4:].abs().sum() == 0 < caches[0].k[:, 0, :, 4].abs().sum()


def test_prefill_checks_its_shapes():
    model, batch = tiny(), random_batch(pad=False)
    cache = model.new_cache(3, max_len=8)
    with pytest.raises(ValueError, match="known tokens"):
        model.prefill(cache, batch["label"], batch["m_tilde"], batch["slots"][:, :3],
                      batch["pos"][:, :3], tokens=batch["tokens"][:, :1])
    with pytest.raises(ValueError, match="max_len"):
        model.new_cache(1, max_len=65)


def test_class_dropout_replaces_the_label_by_the_null_class():
    model, batch = tiny(class_dropout=1.0), random_batch()
    dropped = model.train()(batch)
    null = model.eval()({**batch, "label": torch.full_like(batch["label"], 10)})
    torch.testing.assert_close(dropped, null)
    assert not torch.allclose(model(batch)[torch.isfinite(null)], null[torch.isfinite(null)])


def test_m_tilde_outside_the_table_is_clamped():
    model, batch = tiny(), random_batch()
    out = model({**batch, "m_tilde": torch.full_like(batch["m_tilde"], 99)})
    edge = model({**batch, "m_tilde": torch.full_like(batch["m_tilde"], 24)})
    torch.testing.assert_close(out, edge)


def test_a_few_steps_on_a_fixed_batch_lower_the_loss():
    torch.manual_seed(0)
    model, batch = WaveletGPT(config_from_preset("tiny", max_seq_len=64)).train(), random_batch()
    opt = torch.optim.AdamW(model.optim_groups(0.0), lr=1e-2)
    losses = []
    for _ in range(40):
        bits, n = loss_bits(model(batch), batch)
        loss = bits / n
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_sequence_longer_than_max_seq_len_is_refused():
    with pytest.raises(ValueError, match="exceeds max_seq_len"):
        tiny()(random_batch(T=65))


def test_config_validation_and_presets():
    with pytest.raises(ValueError, match="multiple of n_head"):
        ModelConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="unknown model preset"):
        config_from_preset("huge")
    with pytest.raises(ValueError, match="unknown ModelConfig keys"):
        ModelConfig.from_dict({"n_layers": 3})
    # a recommended sampling setting names what wavar sample can apply, nothing else
    assert ModelConfig(sampling={"cfg": [1, 2], "top_p": 0.9}).sampling["top_p"] == 0.9
    with pytest.raises(ValueError, match=r"not \['top_k'\]"):
        ModelConfig(sampling={"top_k": 3})
    assert set(PRESETS) >= {"tiny", "small", "base"}
    small = WaveletGPT(config_from_preset("small"))
    assert 3e6 < small.num_params() < 6e6
    assert small.flops_per_token(1024) > 6 * small.num_params(non_embedding=True)


def test_weight_decay_groups_cover_every_parameter_once():
    model = tiny()
    groups = model.optim_groups(0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    assert all(p.dim() >= 2 for p in groups[0]["params"])
    assert any(p is model.slot.freqs for p in groups[1]["params"])
