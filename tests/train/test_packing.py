"""Packed batches (wavar.train.packing): every token placed once, the same loss as unpacked,
the FlexAttention block mask equal to the dense mask, and resume with packing."""

import numpy as np
import pytest
import torch

from tests.train.synthetic_source import SyntheticSource
from wavar.codec.grammar import CONTEXT_SIZES
from wavar.model.config import ModelConfig
from wavar.model.transformer import WaveletGPT, loss_bits, sequence_mask, sequence_starts
from wavar.train.config import ConfigError, TrainConfig
from wavar.train.packing import pack_batch, place
from wavar.train.prefetch import pad_batch

SOURCE = SyntheticSource(n=40, min_len=3, max_len=30)


def batch_with_context(n: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    b = SOURCE.sample_batch(n, np.random.default_rng(seed))
    g = np.random.default_rng(seed + 1)
    b["context"] = np.stack([g.integers(0, k, b["tokens"].shape) for k in CONTEXT_SIZES],
                            -1).astype(np.int8)
    return b


def test_place_fills_rows_first_fit_longest_first():
    need = np.array([5, 9, 3, 7, 4])
    row, offset, n = place(need, 12)
    assert n == 3  # 9 + 3 | 7 + 5 | 4
    for r in range(n):  # no overlaps, nothing past the row
        spans = sorted((offset[i], offset[i] + need[i]) for i in np.flatnonzero(row == r))
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
        assert spans[-1][1] <= 12
    with pytest.raises(ValueError, match="more than pack_len"):
        place(np.array([13]), 12)


def test_every_token_is_placed_once_after_its_prefix():
    b = batch_with_context()
    p = {k: v.numpy() for k, v in pack_batch(b, 40, row_multiple=4).items()}
    assert p["doc"].shape[0] % 4 == 0 and p["doc"].shape[1] == 40
    lengths = b["valid"].sum(1)
    assert p["valid"].sum() == lengths.sum() and p["prefix"].sum() == len(lengths)
    for i, n in enumerate(lengths):
        r, at = np.nonzero(p["doc"] == i)
        assert len(set(r)) == 1 and np.array_equal(at, np.arange(at[0], at[0] + n + 1))
        row, steps = r[0], at[1:]
        assert p["prefix"][row, at[0]] and p["position"][row, at].tolist() == list(range(n + 1))
        for key in ("tokens", "slots", "pos", "legal", "context"):
            assert np.array_equal(p[key][row, steps], b[key][i, :n]), key
        assert (p["label"][row, at] == b["label"][i]).all()
        assert (p["m_tilde"][row, at] == b["m_tilde"][i]).all()
    assert (p["doc"] >= 0).sum() == (lengths + 1).sum()
    with pytest.raises(ValueError, match="exceeds max_seq_len 20"):
        pack_batch(b, 40, max_len=20)


@pytest.mark.parametrize("decoder_state,window", [(0, 0), (1, 0), (1, 6)])
def test_packed_batch_gives_the_unpacked_loss(decoder_state, window):
    torch.manual_seed(0)
    model = WaveletGPT(ModelConfig(n_layer=2, n_head=4, n_kv_head=2, n_embd=32, max_seq_len=40,
                                   decoder_state=decoder_state, attn_window=window)).eval()
    b = batch_with_context()
    if not decoder_state:
        del b["context"]
    with torch.no_grad():
        unpacked = pad_batch(b)
        packed = pack_batch(b, 64)
        bits_u, n_u = loss_bits(model(unpacked), unpacked)
        bits_p, n_p = loss_bits(model(packed), packed)
        per_u = model.bits_per_sequence(unpacked)
        per_p = model.bits_per_sequence(packed)
    torch.testing.assert_close(per_p, per_u, rtol=1e-5, atol=1e-4)  # each sequence's own bits
    assert n_p == n_u and packed["doc"].shape[0] < len(b["label"])  # fewer rows than sequences
    torch.testing.assert_close(bits_p, bits_u, rtol=1e-5, atol=1e-4)
    assert per_u.sum().item() == pytest.approx(bits_u.item(), rel=1e-5)


@pytest.mark.parametrize("row_len", [128, 96])  # whole blocks of 128 (built from the layout), not
@pytest.mark.parametrize("window", [0, 5])
def test_flex_block_mask_matches_the_dense_mask(row_len, window):
    """The CUDA path's mask (FlexAttention), run here on the CPU against the dense one."""
    from torch.nn.attention.flex_attention import flex_attention

    packed = pack_batch(batch_with_context(), row_len)
    doc, prefix = packed["doc"], packed["prefix"]
    # the masks find each sequence's class prefix from doc alone: where packing put it
    own = sequence_starts(doc) == torch.arange(doc.shape[1])
    assert torch.equal(own, prefix | (doc < 0))
    q, k, v = (torch.randn(doc.shape[0], 2, doc.shape[1], 16) for _ in range(3))
    dense = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=sequence_mask(doc, window=window))
    block = sequence_mask(doc, flex=True, window=window)
    torch.testing.assert_close(flex_attention(q, k, v, block_mask=block), dense,
                               rtol=1e-4, atol=1e-5)


def test_block_mask_from_the_layout_is_flex_attentions_own():
    """Rows of several blocks, sequences crossing block edges, padding rows: the block mask
    built from the runs of ``doc`` lists the same partial and full blocks as
    ``create_block_mask`` evaluating the mask at every position."""
    from torch.nn.attention.flex_attention import create_block_mask

    rng = np.random.default_rng(0)
    for _ in range(4):
        need = rng.integers(20, 400, size=12)
        row, offset, n_rows = place(need, 1024)
        doc = torch.full((n_rows + 1, 1024), -1, dtype=torch.int64)
        for i, (r, o, n) in enumerate(zip(row, offset, need, strict=True)):
            doc[r, o:o + n] = i

        ours = sequence_mask(doc, flex=True)  # the layout's block mask (rows of whole blocks)
        theirs = create_block_mask(ours.mask_mod, doc.shape[0], None, 1024, 1024, device="cpu")
        for attr in ("kv_num_blocks", "full_kv_num_blocks"):
            assert torch.equal(getattr(ours, attr), getattr(theirs, attr))
        assert torch.equal(ours.to_dense(), theirs.to_dense())
        assert ours.full_kv_num_blocks.sum() > 0 and ours.kv_num_blocks.sum() > 0
        # the row of padding: each block sees only itself (its diagonal)
        assert (ours.kv_num_blocks[-1] == 1).all() and ours.full_kv_num_blocks[-1].sum() == 0


def test_windowed_block_mask_skips_blocks_and_misses_none():
    """With a window the layout's block mask lists every block holding a visible position
    (FlexAttention's own mask, evaluated everywhere) and claims full only blocks that are; it
    skips the blocks out of reach, except those holding a prefix of the query's sequence."""
    from torch.nn.attention.flex_attention import create_block_mask

    rng = np.random.default_rng(1)
    for window in (100, 300):
        need = rng.integers(20, 900, size=8)
        row, offset, n_rows = place(need, 2048)
        doc = torch.full((n_rows, 2048), -1, dtype=torch.int64)
        for i, (r, o, n) in enumerate(zip(row, offset, need, strict=True)):
            doc[r, o:o + n] = i

        ours = sequence_mask(doc, flex=True, window=window)
        theirs = create_block_mask(ours.mask_mod, doc.shape[0], None, 2048, 2048, device="cpu")
        listed, needed = ours.to_dense().bool(), theirs.to_dense().bool()
        assert (needed <= listed).all()  # nothing visible is skipped
        full = torch.zeros_like(listed)  # ours' full blocks: a subset of the truly full
        for b in range(doc.shape[0]):
            for qb in range(16):
                nb = ours.full_kv_num_blocks[b, 0, qb]
                full[b, 0, qb, ours.full_kv_indices[b, 0, qb, :nb].long()] = True
        theirs_full = torch.zeros_like(full)
        for b in range(doc.shape[0]):
            for qb in range(16):
                nb = theirs.full_kv_num_blocks[b, 0, qb]
                theirs_full[b, 0, qb, theirs.full_kv_indices[b, 0, qb, :nb].long()] = True
        # a whole block pair lies within the window only if 255 < window (blocks of 128)
        assert (full <= theirs_full).all() and bool(full.any()) == (window > 255)
        causal = sequence_mask(doc, flex=True).to_dense().bool()
        assert listed.sum() < causal.sum()  # the window skips blocks
        assert listed.sum() <= needed.sum() * 1.25  # and lists few it need not


def test_pack_len_must_hold_a_sequence_and_excludes_buckets(tmp_path):
    with pytest.raises(ConfigError, match="use one"):
        TrainConfig(pack_len=64, length_buckets=4)
    from tests.train.test_loop import VAL, cfg
    from wavar.train.loop import train

    with pytest.raises(ConfigError, match="max_seq_len \\+ 1 = 33"):
        train(cfg(tmp_path, pack_len=32), SOURCE, VAL)


def test_packed_rows_on_the_flex_path_train_with_residual_dropout_only():
    """FlexAttention (packed rows on CUDA, run here on the CPU) drops no attention weights:
    with ``dropout`` the attention layer still trains (residual dropout), and without its
    residual dropout it gives exactly the evaluation output."""
    from wavar.model.transformer import CausalSelfAttention

    torch.manual_seed(0)
    attn = CausalSelfAttention(ModelConfig(n_layer=1, n_head=4, n_kv_head=2, n_embd=32,
                                           max_seq_len=40, dropout=0.5))
    doc = pack_batch(batch_with_context(), 128)["doc"]
    x = torch.randn(doc.shape[0], doc.shape[1], 32)
    pos = torch.arange(doc.shape[1])
    mask = sequence_mask(doc, flex=True)
    with torch.no_grad():
        want = attn.eval()(x, None, None, None, pos, mask)
        attn.train()
        a, b = attn(x, None, None, None, pos, mask), attn(x, None, None, None, pos, mask)
        assert not torch.equal(a, b)  # the residual branch is dropped at random
        attn.resid_drop = torch.nn.Identity()
        torch.testing.assert_close(attn(x, None, None, None, pos, mask), want)
