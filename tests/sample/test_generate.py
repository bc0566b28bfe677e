import numpy as np
import pytest
import torch

from tests.conftest import smooth_image
from wavar import WaveletCodec
from wavar.model.transformer import WaveletGPT, config_from_preset
from wavar.sample import Region, filters, plan, prefix_tokens, sample_images
from wavar.sample.forcing import kept_coefficients
from wavar.sample.generate import generate


def tiny_model(language="zeroblock", shape=(12, 12), seed=0, wavelet="bior4.4",
               final_threshold=2**-2, **config) -> WaveletGPT:
    codec = WaveletCodec(wavelet, language=language, final_threshold=final_threshold)
    cfg = config_from_preset("tiny", num_classes=3, max_seq_len=2048,
                             vocab_size=codec.lang.vocab_size,
                             n_channels=3 if len(shape) == 3 else 1, **config)
    cfg.codec = {**codec.params(), "image_shape": list(shape), "classes": ["a", "b", "c"],
                 "m_tilde_min": 2, "m_tilde_hist": [[1, 2, 1]] * 3}
    torch.manual_seed(seed)
    model = WaveletGPT(cfg).eval()
    with torch.no_grad():  # a non-uniform head, so guidance and filters have work to do
        model.head.weight.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("language", ["zeroblock", "zerotree"])
@pytest.mark.parametrize("shape", [(12, 12), (8, 8, 3)])
def test_samples_are_legal_complete_and_decode(language, shape):
    model = tiny_model(language, shape)
    codec = WaveletCodec(**{k: model.config.codec[k] for k in
                            ("wavelet", "language", "final_threshold")})
    seqs = generate(model, [0, 1, 2, 0], seed=1)
    for s in seqs:
        slots = codec.slots(s)  # replays the grammar: raises on any illegal token
        assert slots.kind[-1] == 4  # complete
        img = codec.decode(s)
        assert img.shape == shape and img.dtype == np.uint8


def test_a_lossless_colour_model_with_decoder_state_samples_legal_images():
    """Issue 19's model kind (cdf53 + RCT down to threshold 1, the decoder's state as input):
    its samples are complete legal sequences that decode to colour images. (Not that they code
    back to themselves: an untrained model's coefficients leave 0..255 and are clipped.)"""
    model = tiny_model(shape=(8, 8, 3), wavelet="cdf53", final_threshold=1, decoder_state=1)
    codec = WaveletCodec("cdf53", language="zeroblock", final_threshold=1)
    assert codec.lossless
    seqs = generate(model, [0, 1], seed=1)
    for s in seqs:
        assert codec.slots(s).kind[-1] == 4  # legal and complete
        img = codec.decode(s)
        assert img.shape == (8, 8, 3) and img.dtype == np.uint8
    assert not np.array_equal(codec.decode(seqs[0]), codec.decode(seqs[1]))


def test_a_windowed_model_samples_through_its_window():
    """A model with an attention window (model_args.attn_window) samples legal complete
    sequences far longer than the window, and the window takes part: the same weights and seed
    without it sample other sequences. (That the cached steps attend as the training forward
    does: tests/model/test_transformer.py.)"""
    kw = dict(shape=(8, 8, 3), wavelet="cdf53", final_threshold=1, decoder_state=1)
    windowed, full = tiny_model(**kw, attn_window=8), tiny_model(**kw)
    assert "last 8 positions" in plan(windowed).why["attention"]
    codec = WaveletCodec("cdf53", language="zeroblock", final_threshold=1)
    a, b = generate(windowed, [0, 1], seed=3), generate(full, [0, 1], seed=3)
    for s in a:
        assert len(s.tokens) > 100 and codec.slots(s).kind[-1] == 4
    assert not all(np.array_equal(x.tokens, y.tokens) for x, y in zip(a, b, strict=True))


def test_same_seed_same_samples_and_different_seed_differs():
    model = tiny_model()
    a = generate(model, [0, 1, 2], seed=5)
    b = generate(model, [0, 1, 2], seed=5)
    c = generate(model, [0, 1, 2], seed=6)
    assert all(np.array_equal(x.tokens, y.tokens) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x.tokens, y.tokens) for x, y in zip(a, c, strict=True))


def test_token_budget_and_plane_limit_give_prefixes():
    model = tiny_model()
    full = generate(model, [1, 1], seed=3)
    short = generate(model, [1, 1], seed=3, max_tokens=20)
    assert [len(s) for s in short] == [20, 20]
    assert all(np.array_equal(s.tokens, f.tokens[:20]) for s, f in zip(short, full, strict=True))
    codec = WaveletCodec("bior4.4", final_threshold=2**-2)
    two = generate(model, [1, 1], seed=3, max_plane=2)
    for s in two:
        assert codec.slots(s).plane[-1] == 2  # stopped at the first token of plane 2


def test_prefix_completion_keeps_the_forced_tokens(rng):
    model = tiny_model()
    codec = WaveletCodec("bior4.4", final_threshold=2**-2)
    img = smooth_image(rng, 12, 12)
    pre = prefix_tokens(codec, img, planes=2)
    assert 0 < len(pre) < len(codec.encode(img))
    with pytest.raises(ValueError, match="not both"):
        prefix_tokens(codec, img, planes=2, tokens=5)
    out = generate(model, [0, 1, 2], prefix=[pre.tokens] * 3, m_tilde=[pre.header.m_tilde] * 3,
                   seed=2)
    for s in out:
        assert np.array_equal(s.tokens[: len(pre)], pre.tokens)
        codec.slots(s)  # and the whole is legal


@pytest.mark.parametrize("settings", [{}, {"cfg": 2.0}])
@pytest.mark.parametrize("decoder_state", [0, 1])
def test_a_shared_forced_prefix_is_one_prefill_not_a_step_per_token(rng, monkeypatch, settings,
                                                                    decoder_state):
    from wavar.sample import cpu_loop

    model = tiny_model(decoder_state=decoder_state)
    codec = WaveletCodec("bior4.4", final_threshold=2**-2)
    imgs = [smooth_image(rng, 12, 12) for _ in range(3)]
    pres = [codec.encode(im) for im in imgs]
    m = min(p.header.m_tilde for p in pres)
    pres = [codec.encode(im) for im in imgs if codec.encode(im).header.m_tilde == m] or pres[:1]
    prefix = [p.tokens[:40 + 7 * i] for i, p in enumerate(pres)]  # lengths differ per row
    labels = list(range(len(prefix)))
    steps, seen = [], []
    real_step, real_draw = model.decode_step, cpu_loop.draw
    monkeypatch.setattr(model, "decode_step", lambda *a, **k: steps.append(1) or real_step(*a, **k))
    monkeypatch.setattr(cpu_loop, "draw", lambda logits, *a: seen.append(logits) or real_draw(
        logits, *a))
    run = dict(prefix=prefix, m_tilde=[m] * len(prefix), seed=5, max_tokens=70, **settings)
    fast = generate(model, labels, **run)
    # 40 tokens shared by every row: one prefill gives token 40; steps for tokens 41..69
    assert len(steps) == 70 - 40 - 1 and len(seen) == 70 - 40
    for f, p in zip(fast, prefix, strict=True):
        assert np.array_equal(f.tokens[: len(p)], p) and len(f) == 70
    # the model's view of token 40 is the one stepping through the prefix gives (the loop
    # before the prefill; the draws differ after it: the skipped steps drew no noise)
    first_free = seen[0]
    monkeypatch.setattr(cpu_loop, "_take_common_prefix", lambda *a: (0, []))
    steps.clear()
    seen.clear()
    slow = generate(model, labels, **run)
    assert len(steps) == 70 - 1
    torch.testing.assert_close(first_free, seen[40], atol=1e-4, rtol=1e-4)
    for s, p in zip(slow, prefix, strict=True):
        assert np.array_equal(s.tokens[: len(p)], p)


def test_region_completion_keeps_the_kept_coefficients(rng):
    model = tiny_model(shape=(16, 16))
    codec = WaveletCodec("bior4.4", final_threshold=2**-2)
    img = smooth_image(rng, 16, 16)
    real = codec.decode_coefficients([codec.encode(img)]).reshape(-1)
    everything = generate(model, [0], region=Region(img, np.ones((16, 16), bool)), seed=1)[0]
    assert np.array_equal(everything.tokens, codec.encode(img).tokens)
    keep = np.zeros((16, 16), bool)
    keep[:, :8] = True
    kept = kept_coefficients(codec, keep, 1)
    assert 0 < kept.sum() < kept.size
    match_region, match_free = [], []
    for seed in range(3):
        s = generate(model, [1], region=Region(img, keep), seed=seed)[0]
        est = codec.decode_coefficients([s]).reshape(-1)
        match_region.append(np.mean(est[kept] == real[kept]))
        free = generate(model, [1], m_tilde=[s.header.m_tilde], seed=seed)[0]
        est_free = codec.decode_coefficients([free]).reshape(-1)
        match_free.append(np.mean(est_free[kept] == real[kept]))
    # forced wherever the grammar allows it: nearly all kept coefficients come out exact,
    # far more than an unconditioned sample reproduces by chance
    assert np.mean(match_region) > 0.9 > np.mean(match_free) + 0.2


def test_guidance_scale_zero_is_the_unconditional_model():
    cond, uncond = torch.randn(4, 7), torch.randn(4, 7)
    cond[:, 0] = uncond[:, 0] = float("-inf")
    torch.testing.assert_close(filters.guidance(cond, uncond, 0.0).softmax(-1),
                               uncond.softmax(-1))
    torch.testing.assert_close(filters.guidance(cond, uncond, 1.0).softmax(-1), cond.softmax(-1))
    model = tiny_model()
    null = model.config.num_classes
    guided = generate(model, [0, 1, 2], cfg=0.0, seed=9, m_tilde=[3, 3, 3])
    uncond_samples = generate(model, [null] * 3, seed=9, m_tilde=[3, 3, 3])
    assert all(np.array_equal(a.tokens, b.tokens)
               for a, b in zip(guided, uncond_samples, strict=True))


def test_filters_keep_a_legal_token():
    logits = torch.tensor([[2.0, 1.0, 0.5, float("-inf")], [0.1, 0.2, 0.3, 0.4]])
    assert torch.isfinite(filters.top_k(logits, 1)).sum(-1).tolist() == [1, 1]
    kept = torch.isfinite(filters.top_p(logits, 0.5))
    assert kept[0].tolist() == [True, False, False, False]
    # one nucleus per row (a per-plane schedule): 1 keeps every token
    rows = torch.isfinite(filters.top_p(logits, torch.tensor([[1.0], [0.25]])))
    assert rows.tolist() == [[True, True, True, False], [False, False, False, True]]
    legal = torch.tensor([0b0110, 0b1000])
    masked = filters.apply_legal_mask(logits, legal)
    assert torch.isfinite(masked).tolist() == [[False, True, True, False],
                                               [False, False, False, True]]


def test_sample_draws_what_multinomial_draws_and_never_an_illegal_token():
    logits = torch.randn(4000, 7)
    logits[:, 3] = float("-inf")
    a = filters.sample(logits, torch.Generator().manual_seed(1))
    b = torch.multinomial(logits.softmax(-1), 1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b[:, 0]) and not (a == 3).any()
    freq = torch.bincount(a, minlength=7).float() / len(a)
    assert (freq - logits.softmax(-1).mean(0)).abs().max() < 0.03


def test_bad_labels_are_refused():
    with pytest.raises(ValueError, match="labels"):
        generate(tiny_model(), [7])


def test_ll_initialisation_starts_from_a_training_ll_band(rng):
    from wavar.sample.forcing import ll_bank, ll_indices

    model = tiny_model(shape=(16, 16))
    codec = WaveletCodec("bior4.4", final_threshold=2**-2)
    images = np.stack([smooth_image(rng, 16, 16) for _ in range(12)])
    labels = np.arange(12) % 3
    model.config.codec["ll_bank"] = bank = ll_bank(codec, images, labels, per_class=4)
    idx = ll_indices(codec.geometry(16, 16), 1)
    seqs = generate(model, [0, 1, 2, 1], seed=4, ll_init=True)
    for y, s in zip([0, 1, 2, 1], seqs, strict=True):
        est = codec.decode_coefficients([s]).reshape(-1)[idx]
        entries = np.array(bank[y]["ll"])
        # decoded to the final precision, the LL band is one of the class's training bands
        assert np.abs(entries - est).max(axis=1).min() <= codec.final_threshold
        assert s.header.m_tilde in bank[y]["m_tilde"]
    with pytest.raises(ValueError, match="LL bank"):
        generate(tiny_model(), [0], ll_init=True)


@pytest.mark.parametrize("shape", [(12, 12), (8, 8, 3)])
def test_sample_images_returns_decoded_images_class_by_class(shape):
    from wavar.sample.generate import decode

    model = tiny_model(shape=shape)
    images, frames = sample_images(model, ["c", 0], n=2, seed=3, max_tokens=150, progressive=4)
    assert images.dtype == np.uint8 and images.shape == (4, *shape)
    # the same draws as sampling the labels c, c, a, a and decoding them
    seqs = generate(model, [2, 2, 0, 0], seed=3, max_tokens=150)
    assert np.array_equal(images, np.stack(decode(model, seqs)))
    # coarse-to-fine frames from growing prefixes, the last one the complete images
    assert 1 < len(frames) <= 4 and all(f.shape == images.shape for f in frames)
    assert np.array_equal(frames[-1], images) and not np.array_equal(frames[0], images)
    assert sample_images(model, "all", n=1, seed=0, max_tokens=20).shape == (3, *shape)


def test_sample_images_refuses_unknown_classes_and_empty_requests():
    model = tiny_model()
    with pytest.raises(ValueError, match="unknown class 'zebra'.*0=a, 1=b, 2=c"):
        sample_images(model, "zebra")
    with pytest.raises(ValueError, match="unknown class 3"):
        sample_images(model, 3)
    with pytest.raises(ValueError, match="n must be"):
        sample_images(model, "a", n=0)


def test_generate_refuses_a_temperature_that_is_not_positive():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        generate(tiny_model(), [0], temperature=0.0)


def test_per_plane_settings_change_only_the_planes_they_name():
    model = tiny_model()
    codec = WaveletCodec("bior4.4", final_threshold=2**-2)
    plain = generate(model, [0, 1, 2, 0], seed=4)
    # one value per plane, all equal: the single value's samples
    same = generate(model, [0, 1, 2, 0], seed=4, temperature=(1.0, 1.0, 1.0))
    assert [s.tokens.tolist() for s in same] == [s.tokens.tolist() for s in plain]
    # cooler from plane 2 on: planes 0 and 1 unchanged (the same noise, the same logits)
    cool = generate(model, [0, 1, 2, 0], seed=4, temperature=(1.0, 1.0, 0.3))
    changed = 0
    for p, c in zip(plain, cool, strict=True):
        first = int(np.argmax(codec.slots(p).plane >= 2))  # first token of plane 2
        assert np.array_equal(p.tokens[:first], c.tokens[:first])
        changed += not np.array_equal(p.tokens, c.tokens)
    assert changed > 0
    # a nucleus from plane 2 on: planes 0 and 1 unchanged
    cut = generate(model, [0, 1, 2, 0], seed=4, top_p=(1.0, 1.0, 0.3))
    changed = 0
    for p, c in zip(plain, cut, strict=True):
        first = int(np.argmax(codec.slots(p).plane >= 2))
        assert np.array_equal(p.tokens[:first], c.tokens[:first])
        changed += not np.array_equal(p.tokens, c.tokens)
    assert changed > 0
    # guidance from plane 1 on: plane 0 as unguided; guidance on planes 0-1 only: those as
    # guided throughout
    guided, ramp = (generate(model, [0, 1, 2, 0], seed=4, cfg=c) for c in (4.0, (4.0, 4.0, 1.0)))
    late = generate(model, [0, 1, 2, 0], seed=4, cfg=(1.0, 4.0))
    for p, g, r, lt in zip(plain, guided, ramp, late, strict=True):
        planes = codec.slots(g).plane
        first1, first2 = int(np.argmax(planes >= 1)), int(np.argmax(planes >= 2))
        assert np.array_equal(r.tokens[:first2], g.tokens[:first2])
        assert np.array_equal(lt.tokens[:first1], p.tokens[:first1])


def test_a_per_plane_draw_is_each_row_drawn_with_its_planes_values():
    from wavar.sample.draw import PlaneSchedule, draw
    from wavar.sample.options import SamplingOptions

    torch.manual_seed(0)
    logits = torch.randn(12, 7) * 3  # 6 rows, then their unconditional twins
    legal = torch.tensor([127, 126, 95, 127, 7, 127])
    planes = torch.tensor([0, 1, 2, 3, 1, 7])  # past the schedule's end: its last value
    options = SamplingOptions(cfg=(0.5, 2.0, 3.0), temperature=(1.5, 1.0, 0.4, 0.7),
                              top_p=(1.0, 0.2, 0.6))
    got = draw(logits, legal, options, torch.Generator().manual_seed(1),
               schedule=PlaneSchedule.of(options, torch.device("cpu")), planes=planes)
    for row, plane in enumerate(planes.tolist()):
        scalar = SamplingOptions(cfg=options.cfg[min(plane, 2)],
                                 temperature=options.temperature[min(plane, 3)],
                                 top_p=options.top_p[min(plane, 2)])
        want = draw(logits, legal, scalar, torch.Generator().manual_seed(1))
        assert got[row] == want[row], row
    assert (legal[torch.arange(6)] >> got & 1).all()


@pytest.mark.parametrize("settings, message", [
    ({"temperature": (1.0, 0.0)}, "temperature must be > 0"),
    ({"top_p": (1.0, 0.0)}, "top_p must be > 0"),
    ({"cfg": ()}, "at least one value")])
def test_bad_per_plane_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        generate(tiny_model(), [0], **settings)
