import numpy as np
import pytest

from tests.conftest import smooth_image
from wavar import WaveletCodec
from wavar.codec import BatchScanState, CodedImage
from wavar.errors import ImageError, TokenStreamError

SHAPES = [(28, 28, 1), (32, 32, 3), (100, 60, 1), (5, 13, 3), (1, 1, 1), (1, 40, 1)]
VARIANTS = [
    ("zeroblock", "deferred"),
    ("zeroblock", "immediate"),
    ("zerotree", "deferred"),
    ("zerotree", "immediate"),
]


def _img(rng, h, w, c):
    return smooth_image(rng, h, w, c)


@pytest.mark.parametrize("language,refinement", VARIANTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_lossless_round_trip_is_bit_exact(language, refinement, shape, rng):
    codec = WaveletCodec("cdf53", language=language, refinement=refinement)
    assert codec.lossless
    img = _img(rng, *shape)
    seq = codec.encode(img)
    out = codec.decode(seq)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(out, img)


def test_lossless_on_cifar_images(cifar_images):
    codec = WaveletCodec("cdf53")
    seqs = codec.encode_batch(cifar_images)
    for img, out in zip(cifar_images, codec.decode_batch(seqs), strict=True):
        assert np.array_equal(img, out)


def test_lossless_extreme_images():
    codec = WaveletCodec("cdf53")
    for img in (np.zeros((8, 8), np.uint8), np.full((9, 9, 3), 255, np.uint8),
                np.indices((16, 16)).sum(0).astype(np.uint8) % 2 * 255):
        assert np.array_equal(codec.decode(codec.encode(img)), img)
    assert len(codec.encode(np.zeros((8, 8), np.uint8))) == 0  # nothing to say


@pytest.mark.parametrize("wavelet,final", [("bior4.4", 2**-4), ("haar", 2**-3), ("cdf53", 4)])
def test_full_decode_error_is_within_the_final_threshold(wavelet, final, rng):
    codec = WaveletCodec(wavelet, final_threshold=final)
    img = _img(rng, 32, 32, 1)
    coefs = codec.coefficients(img[None])
    est = codec.decode_coefficients([codec.encode(img)])
    # significant coefficients sit within half the last interval, insignificant ones < T_f
    assert np.abs(est - coefs).max() <= final
    assert np.abs(est - coefs).max() > 0  # lossy: something was dropped


@pytest.mark.parametrize("language", ["zeroblock", "zerotree"])
@pytest.mark.parametrize("refinement", ["deferred", "immediate"])
@pytest.mark.parametrize("wavelet", ["bior4.4", "haar", "cdf53"])
def test_a_coarser_threshold_codes_a_prefix_of_a_finer_one(language, refinement, wavelet, rng):
    """An embedded code: lowering the final threshold adds bit-planes after the same tokens
    (what lets a model of a coarser threshold start training at a finer one, init_from)."""
    img = smooth_image(rng, 24, 20, channels=3 if wavelet == "cdf53" else 1)
    # cdf53's integer coefficients: threshold 1 is lossless, the finest there is
    thresholds = (16.0, 4.0, 1.0) if wavelet == "cdf53" else (4.0, 1.0, 0.25)
    seqs = [WaveletCodec(wavelet, language=language, refinement=refinement,
                         final_threshold=t).encode(img) for t in thresholds]
    for coarse, fine in zip(seqs[:-1], seqs[1:], strict=True):
        assert len(fine) > len(coarse) and fine.header.m_tilde == coarse.header.m_tilde
        assert np.array_equal(fine.tokens[: len(coarse)], coarse.tokens)


def test_m_tilde_brackets_the_largest_coefficient(rng):
    codec = WaveletCodec("bior4.4")
    img = _img(rng, 28, 28, 1)
    seq = codec.encode(img)
    peak = np.abs(codec.coefficients(img[None])).max()
    t0 = 2.0 ** (seq.header.m_tilde - 1)
    assert t0 <= peak < 2 * t0


@pytest.mark.parametrize("language,refinement", VARIANTS)
@pytest.mark.parametrize("wavelet", ["bior4.4", "cdf53"])
def test_prefixes_bracket_the_truth_and_only_narrow(language, refinement, wavelet, rng):
    """Every prefix decodes; the truth stays in each coefficient's interval, which only shrinks.

    (Strictly monotone PSNR is impossible for any decoder that makes progress: a refinement
    bit can move the midpoint away from a coefficient that sat at the old midpoint. What is
    guaranteed, and tested here, is that the uncertainty never grows.)
    """
    codec = WaveletCodec(wavelet, language=language, refinement=refinement)
    img = _img(rng, 16, 16, 3)
    seq = codec.encode(img)
    truth = codec.coefficients(img[None])
    prev_width = None
    for k in np.linspace(0, len(seq), 25).astype(int):
        est, width = codec.decode_coefficients([seq], n_tokens=int(k), return_width=True)
        sig = width > 0
        lo_bound = np.abs(est) - (width / 2 if not codec.integer else np.maximum(width - 1, 0) / 2)
        assert np.all(np.sign(est[sig]) == np.sign(truth[sig]))
        assert np.all(np.abs(truth[sig]) >= lo_bound[sig] - 1e-9)
        assert np.all(np.abs(truth[sig]) < lo_bound[sig] + width[sig] + 1e-9)
        if prev_width is not None:
            was_sig = prev_width > 0
            assert np.all(width[was_sig] <= prev_width[was_sig])
            assert np.all(sig[was_sig])
        prev_width = width


def test_mean_psnr_rises_plane_by_plane(cifar_images):
    """Averaged over images, quality rises with each bit-plane (the practical promise)."""
    from wavar.eval.metrics import psnr

    codec = WaveletCodec("bior4.4", final_threshold=2**-5)
    seqs = codec.encode_batch(cifar_images)
    n_planes = min(s.header.n_planes for s in seqs)
    curves = []
    for img, seq in zip(cifar_images, seqs, strict=True):
        ends = np.flatnonzero(np.diff(codec.slots(seq).plane)) + 1  # first token of each plane
        curves.append([psnr(img, codec.decode(seq, int(e))) for e in ends[:n_planes]])
    mean = np.mean(curves, axis=0)
    assert np.all(np.diff(mean) > 0), mean


@pytest.mark.parametrize("language,refinement", VARIANTS)
def test_encoder_output_is_legal_at_every_step(language, refinement, cifar_images):
    codec = WaveletCodec("bior4.4", language=language, refinement=refinement)
    for seq in codec.encode_batch(cifar_images[:4]):
        slots = codec.slots(seq)
        assert len(slots) == len(seq) + 1
        toks = seq.tokens.astype(np.int64)
        assert np.all((slots.legal[:-1] >> toks) & 1)
        assert slots.kind[-1] == 4  # done
        # and stepping a ScanState token by token agrees
        st = codec.state(seq.header)
        for t in toks[:200]:
            assert st.legal_mask[t]
            st.push(int(t))


@pytest.mark.parametrize("language,refinement", VARIANTS)
@pytest.mark.parametrize("wavelet", ["bior4.4", "cdf53"])
@pytest.mark.parametrize("shape", [(8, 8, 1), (8, 8, 3), (5, 13, 1), (32, 32, 1)])
def test_random_legal_sequences_reencode_to_themselves(language, refinement, wavelet, shape):
    """Every legal sequence is the canonical code of the coefficients it decodes to."""
    rng = np.random.default_rng(7)
    codec = WaveletCodec(wavelet, language=language, refinement=refinement)
    h, w, c = shape
    for _ in range(8):
        m_tilde = int(rng.integers(codec.final_exponent + 1, codec.final_exponent + 5))
        seq = codec.random_sequence(codec.header(h, w, c, m_tilde), rng)
        coefs = codec.decode_coefficients([seq])
        again = codec.encode_coefficients(coefs, h, w)[0]
        assert again.header == seq.header
        assert np.array_equal(again.tokens, seq.tokens)


def test_m_tilde_cannot_be_forced(rng):
    codec = WaveletCodec("bior4.4")
    coefs = codec.coefficients(_img(rng, 32, 32, 1)[None])
    mt = int(codec.m_tilde(coefs)[0])
    assert len(codec.encode_coefficients(coefs, 32, 32, [mt])[0]) > 0
    with pytest.raises(ValueError, match="m_tilde"):
        codec.encode_coefficients(coefs, 32, 32, [mt + 1])


def test_zero_block_grammar_obligations():
    codec = WaveletCodec("bior4.4")
    st = codec.state(codec.header(32, 32, 1, m_tilde=0))
    # the first plane must contain a significant coefficient: 63 Group4x4 then no 64th
    for _ in range(63):
        st.push(0)
    assert not st.legal_mask[0] and st.legal_mask[1]
    st.push(1)
    st.push(1)
    st.push(1)  # three empty quads: the fourth cannot be empty
    assert st.slot["kind"] == "quad2x2" and not st.legal_mask[1]
    st.push(2)
    st.push(2)
    st.push(2)  # three insignificant: the fourth must become significant
    assert st.slot["kind"] == "coefficient"
    assert list(np.flatnonzero(st.legal_mask)) == [3, 4]
    with pytest.raises(TokenStreamError) as err:
        st.push(2)
    assert err.value.position == 69


def test_illegal_token_is_refused_with_its_position(rng):
    codec = WaveletCodec("bior4.4")
    seq = codec.encode(_img(rng, 28, 28, 1))
    slots = codec.slots(seq)
    pos = int(np.flatnonzero(slots.kind[:-1] == 3)[5])  # a refinement slot
    bad = seq.tokens.copy()
    bad[pos] = 0  # Group4x4 where a refinement bit must come
    with pytest.raises(TokenStreamError, match=f"position {pos}") as err:
        codec.decode(CodedImage(bad, seq.header))
    assert err.value.position == pos
    with pytest.raises(TokenStreamError, match="position 3"):
        codec.decode(CodedImage(np.r_[seq.tokens[:3], 9].astype(np.uint8), seq.header))
    with pytest.raises(TokenStreamError, match="after the end"):
        codec.decode(CodedImage(np.r_[seq.tokens, 5].astype(np.uint8), seq.header))


def test_wrong_codec_for_a_sequence_is_refused(rng):
    seq = WaveletCodec("haar").encode(_img(rng, 8, 8, 1))
    with pytest.raises(ValueError, match="from_header"):
        WaveletCodec("bior4.4").decode(seq)
    assert WaveletCodec.from_header(seq.header).decode(seq).shape == (8, 8)


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.zeros((8, 8), np.float32), "uint8"),
        (np.zeros((8, 8, 4), np.uint8), r"\(H, W, 3\)"),
        (np.zeros((0, 8), np.uint8), "empty"),
        (np.zeros((2, 8, 8, 3), np.uint8), "grey"),
        ([[1, 2], [3, 4]], "numpy array"),
    ],
)
def test_bad_images_get_clear_errors(bad, match):
    with pytest.raises(ImageError, match=match):
        WaveletCodec().encode(bad)


def test_single_channel_axis_is_grey(rng):
    img = _img(rng, 8, 8, 1)
    codec = WaveletCodec("cdf53")
    assert np.array_equal(codec.decode(codec.encode(img[..., None])), img)


def test_bad_codec_parameters():
    with pytest.raises(ValueError, match="power of two"):
        WaveletCodec(final_threshold=0.3)
    with pytest.raises(ValueError, match=">= 1"):
        WaveletCodec("cdf53", final_threshold=0.5)
    with pytest.raises(ValueError, match="unknown wavelet"):
        WaveletCodec("db4")
    with pytest.raises(ValueError, match="unknown language"):
        WaveletCodec(language="raster2")


def test_batch_state_steps_like_the_replay(cifar_images):
    codec = WaveletCodec("bior4.4", language="zerotree")
    seqs = codec.encode_batch(cifar_images[:6])
    slots = [codec.slots(s) for s in seqs]
    batch = BatchScanState(codec, 32, 32, 3, [s.header.m_tilde for s in seqs])
    longest = max(len(s) for s in seqs)
    for t in range(longest + 1):
        legal = batch.legal()
        si, sp = batch.slots()
        for i, (s, sl) in enumerate(zip(seqs, slots, strict=True)):
            if t <= len(s):
                assert legal[i] == sl.legal[t]
                assert list(si[i]) == list(sl.stacked()[t])
                np.testing.assert_allclose(sp[i], [sl.y[t], sl.x[t]])
        if t < longest:
            batch.push(np.array([s.tokens[t] if t < len(s) else -1 for s in seqs]))
    assert batch.done.all()


def test_slots_describe_the_scan(rng):
    codec = WaveletCodec("bior4.4")
    seq = codec.encode(_img(rng, 32, 32, 3))
    sl = codec.slots(seq)
    assert sl.kind[0] == 0 and sl.plane[0] == 0 and sl.channel[0] == 0
    assert sl.level[0] == 0 and (sl.y[0], sl.x[0]) == (0.5, 0.5)
    # channels interleave block by block: Y, Cb, Cr of the first block come first
    blocks = np.flatnonzero(sl.kind == 0)
    assert list(sl.channel[blocks[:3]]) == [0, 1, 2]
    assert np.all(np.diff(sl.plane) >= 0)
    assert np.all((sl.y >= 0) & (sl.y <= 1) & (sl.x >= 0) & (sl.x <= 1))
