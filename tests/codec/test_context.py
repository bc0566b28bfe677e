"""The decoder-state features (grammar.context_of): hand-checked on a small coefficient array,
and the same whether replayed from a finished sequence or stepped token by token."""

import numpy as np
import pytest

from wavar.codec import WaveletCodec
from wavar.codec import grammar as g
from wavar.codec.scan import HL

CODEC = WaveletCodec(wavelet="haar", final_threshold=1)


def _hand_made():
    # 8 x 8 coefficients, a 2 x 2 LL band: the corner block holds LL and level 1 (2 x 2
    # subbands), blocks 1-3 are level 2's HL, LH, HH (4 x 4 each). m~ = 4: planes T = 8, 4, 2, 1
    a = np.zeros((1, 1, 8, 8))
    a[0, 0, 0, 0] = 12  # LL: significant at plane 0, refined up ([12, 16)) at plane 1
    a[0, 0, 0, 2] = -5  # HL1: significant at plane 1; the parent of HL2's top-left quad
    a[0, 0, 0, 4] = 6  # HL2 (0, 0): significant at plane 1, refined up ([6, 8)) at plane 2
    a[0, 0, 0, 5] = 3  # HL2 (0, 1): significant at plane 2
    a[0, 0, 1, 4] = -2  # HL2 (1, 0): significant at plane 2, after (0, 1) in the quad
    return CODEC.encode_coefficients(a, 8, 8)[0]


def _position(slots, plane, kind, level, orient, y, x):
    hit = np.flatnonzero((slots.plane == plane) & (slots.kind == kind) & (slots.level == level)
                         & (slots.orientation == orient) & np.isclose(slots.y, y)
                         & np.isclose(slots.x, x))
    assert hit.size == 1
    return int(hit[0])


def test_hand_checked_context():
    seq = _hand_made()
    assert seq.header.m_tilde == 4 and seq.header.n_planes == 4
    ctx = CODEC.context(seq)
    slots = CODEC.slots(seq)
    names = g.CONTEXT_NAMES

    def at(plane, kind, level, orient, y, x):
        return dict(zip(names, ctx[_position(slots, plane, kind, level, orient, y, x)].tolist(),
                        strict=True))

    zero = dict.fromkeys(names, 0)
    # HL2 (0, 1) at plane 2 (T = 2): W neighbour (+6, lower end 6 after its refinement) is
    # significant and positive; its SW neighbour (-2) comes later in the quad; of its 8
    # neighbours 5 lie inside the subband; the parent (-5, lower end 4) is 2x the threshold
    assert at(2, g.COEF, 2, HL, 0.125, 0.375) == {
        **zero, "sig_h": 1, "parent": 2, "neighbourhood": 3, "sign_context": 1 + 3 * 2 + 1}
    # HL2 (0, 0) at plane 2: a refinement, significant one plane ago, no bit refined yet
    assert at(2, g.REFINE, 2, HL, 0.125, 0.125) == {
        **zero, "parent": 2, "planes_since": 2, "sign_context": 1 + 3 * 1 + 1, "sign": 1}
    # ... at plane 3 (T = 1): its first refinement bit (upper half: 1) is known; E (+3) and
    # S (-2) are significant now; the parent is 4x the threshold
    assert at(3, g.REFINE, 2, HL, 0.125, 0.125) == {
        **zero, "sig_h": 1, "sig_v": 1, "parent": 3, "neighbourhood": 4,
        "planes_since": 3, "refined_bits": 2, "sign_context": 1 + 3 * 2 + 0, "sign": 1}
    # HL2's block at plane 1 (T = 4): no ring (the block is the whole subband); its parents
    # (HL1) hold -5, found earlier in this plane: rel 1
    assert at(1, g.BLOCK, 2, HL, 0.5, 0.5) == {**zero, "parent": 1}
    # LH2's block at plane 2: parents LH1 all zero, the same position in HL2 is significant
    assert at(2, g.BLOCK, 2, 2, 0.5, 0.5) == {**zero, "orientations": 1}
    # the LL coefficient: no parent, no other orientation
    assert at(1, g.REFINE, 0, 0, 0.25, 0.25)["parent"] == 7
    assert at(1, g.REFINE, 0, 0, 0.25, 0.25)["orientations"] == 3
    assert (ctx[-1] == 0).all()  # done


@pytest.mark.parametrize("kw, shape", [
    (dict(wavelet="bior4.4", final_threshold=2**-4), (28, 28)),
    (dict(wavelet="haar", final_threshold=2**-3, language="zerotree"), (28, 28)),
    (dict(wavelet="haar", final_threshold=2**-3, refinement="immediate"), (20, 20)),
    (dict(wavelet="cdf53", final_threshold=1), (16, 16, 3)),
])
def test_replayed_context_equals_stepped(kw, shape):
    codec = WaveletCodec(**kw)
    rng = np.random.default_rng(0)
    img = (rng.random(shape) * 255).astype(np.uint8)
    img[:, : shape[1] // 4] = 0  # a flat region: groups and empty neighbourhoods too
    seq = codec.encode(img)
    ctx = codec.context(seq)
    state = codec.batch_state(shape[0], shape[1], shape[2] if len(shape) == 3 else 1,
                              [seq.header.m_tilde, seq.header.m_tilde])
    for t in range(len(seq) + 1):
        step = state.context()
        assert (step[0] == ctx[t]).all(), t
        if t < len(seq):
            state.push(np.array([seq.tokens[t], -1 if t % 2 else seq.tokens[t // 2]]))
    assert ctx.min() >= 0 and (ctx.max(0) < np.array(g.CONTEXT_SIZES)).all()
    assert len(np.unique(ctx, axis=0)) > 50  # the features do vary


def test_training_batches_carry_context():
    from wavar.data.shards import TokenDataset

    codec = WaveletCodec(wavelet="haar", final_threshold=2**-3)
    rng = np.random.default_rng(1)
    images = (rng.random((3, 12, 12)) * 255).astype(np.uint8)
    seqs = codec.encode_batch(images)
    lengths = np.array([len(s) for s in seqs])
    data = TokenDataset.from_sequences(
        codec, images.shape[1:], np.concatenate([s.tokens for s in seqs]),
        np.concatenate([[0], np.cumsum(lengths)]),
        np.array([s.header.m_tilde for s in seqs]), np.arange(3), context=True)
    batch = data.batch(np.array([2, 0]))
    for r, i in enumerate((2, 0)):
        assert (batch["context"][r, : lengths[i]] == codec.context(seqs[i])[:-1]).all()
    plain = TokenDataset.from_sequences(
        codec, images.shape[1:], data.tokens, data.offsets, data.m_tilde, data.label)
    assert plain.context is None and "context" not in plain.batch(np.array([0]))
