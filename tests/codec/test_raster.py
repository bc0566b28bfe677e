"""The raster language (pixel baseline): codec, batch states, shards, a tiny model end to end."""

import numpy as np
import pytest
import torch

from tests.conftest import smooth_image
from wavar.codec import (
    BatchScanState,
    CodedImage,
    RasterBatchState,
    RasterCodec,
    WaveletCodec,
    codec_from_params,
)
from wavar.codec import grammar as g
from wavar.data.shards import TokenDataset, codec_tag
from wavar.errors import DatasetError, TokenStreamError

CODEC = RasterCodec()


@pytest.mark.parametrize("shape", [(7, 5), (6, 4, 3)])
def test_round_trip_is_lossless_in_raster_order(rng, shape):
    img = rng.integers(0, 256, size=shape, dtype=np.uint8)
    seq = CODEC.encode(img)
    c = shape[2] if len(shape) == 3 else 1
    assert seq.tokens.dtype == np.uint8 and len(seq) == img.size
    assert (seq.header.height, seq.header.width, seq.header.channels) == (shape[0], shape[1], c)
    assert seq.header.m_tilde == 0 and seq.header.language == "raster"
    # row-major, channels interleaved per pixel
    assert seq.tokens[c * shape[1] : c * (shape[1] + 1)].tolist() == img[1, 0].ravel().tolist()
    np.testing.assert_array_equal(CODEC.decode(seq), img)
    prefix = CODEC.decode(seq, n_tokens=c * shape[1])  # the first row; the rest is 0
    np.testing.assert_array_equal(prefix[0], img[0])
    assert not prefix[1:].any()
    batch = CODEC.encode_batch(np.stack([img, img[::-1]]))
    for got, want in zip(CODEC.decode_batch(batch), [img, img[::-1]], strict=True):
        np.testing.assert_array_equal(got, want)


def test_streams_that_are_too_long_or_not_pixels_are_refused():
    seq = CODEC.encode(np.zeros((2, 2), np.uint8))
    with pytest.raises(TokenStreamError, match="position 4") as e:
        CODEC.decode(CodedImage(np.zeros(5, np.uint8), seq.header))
    assert e.value.position == 4
    with pytest.raises(TokenStreamError, match="position 1"):
        CODEC.decode(CodedImage(np.array([0, 256]), seq.header))
    with pytest.raises(ValueError, match="raster"):
        CODEC.decode(WaveletCodec("haar").encode(np.zeros((4, 4), np.uint8)))
    with pytest.raises(ValueError, match="m_tilde"):
        CODEC.header(2, 2, 1, m_tilde=3)


def test_slots_are_pixel_centres_of_plane_zero_and_all_tokens_are_legal():
    img = np.arange(4 * 2 * 3, dtype=np.uint8).reshape(4, 2, 3)
    sl = CODEC.slots(CODEC.encode(img))
    n = img.size
    assert len(sl) == n + 1
    assert not sl.plane.any() and not sl.level.any() and not sl.orientation.any()
    assert sl.channel[:6].tolist() == [0, 1, 2, 0, 1, 2]
    assert (sl.kind[:-1] == g.COEF).all() and sl.kind[-1] == g.DONE
    assert (sl.legal[:-1] == -1).all() and sl.legal[-1] == 0
    # the frame of the wavelet slots: the 4 x 2 image sits centred in a 4 x 4 square
    assert (sl.y[0], sl.x[0]) == (0.125, 0.375) and (sl.y[n - 1], sl.x[n - 1]) == (0.875, 0.625)
    assert sl.stacked().shape == (n + 1, 5)


def test_batch_state_steps_rows_and_survives_reindexing():
    st = CODEC.batch_state(2, 2, 3, [0, 0, 0])
    assert isinstance(st, RasterBatchState) and len(st) == 3
    assert st.legal().tolist() == [-1, -1, -1] and not st.done.any()
    seq = CODEC.encode(np.arange(12, dtype=np.uint8).reshape(2, 2, 3))
    ref = CODEC.slots(seq)
    ref_si, ref_sp = ref.stacked(), np.stack([ref.y, ref.x], 1)
    for t in range(5):
        si, sp = st.slots()
        np.testing.assert_array_equal(si[0], ref_si[t])
        np.testing.assert_array_equal(sp[0], ref_sp[t])
        st.push(np.array([seq.tokens[t], 7, -1 if t % 2 else 255]))  # row 2 skips odd steps
    assert st.mems[:, 0].tolist() == [5, 5, 3]
    st.mems = st.mems[[2, 0]]  # the sampler compacts rows like this
    for _ in range(7):
        st.push(np.array([-1, 1]))
    assert st.done.tolist() == [False, True] and st.legal().tolist() == [-1, 0]
    assert st.slots()[0][1, 4] == g.DONE
    with pytest.raises(TokenStreamError, match="row 1"):
        st.push(np.array([1, 1]))  # past the end
    with pytest.raises(TokenStreamError, match="row 0"):
        st.push(np.array([256, -1]))
    with pytest.raises(ValueError, match="m_tilde"):
        CODEC.batch_state(2, 2, 1, [1])
    assert isinstance(WaveletCodec().batch_state(8, 8, 1, [3]), BatchScanState)


def test_factory_and_shard_tag():
    assert isinstance(codec_from_params({**CODEC.params(), "image_shape": [8, 8]}), RasterCodec)
    wave = codec_from_params({**WaveletCodec("haar").params(), "classes": ["a"]})
    assert isinstance(wave, WaveletCodec) and wave.wavelet == "haar"
    assert codec_tag(CODEC) == "raster"


def token_dataset(images: np.ndarray, labels: np.ndarray) -> TokenDataset:
    seqs = CODEC.encode_batch(images)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    return TokenDataset.from_sequences(CODEC, images.shape[1:],
                                       np.concatenate([s.tokens for s in seqs]), offsets,
                                       np.zeros(len(seqs), np.int16), labels, ("a", "b", "c"))


@pytest.mark.parametrize("shape", [(8, 8), (4, 6, 3)])
def test_token_dataset_batches(rng, shape):
    images = rng.integers(0, 256, size=(5, *shape), dtype=np.uint8)
    data = token_dataset(images, np.arange(5) % 3)
    n = images[0].size
    assert data.lengths.tolist() == [n] * 5
    b = data.batch(np.array([3, 1]))
    np.testing.assert_array_equal(b["tokens"][0], images[3].ravel())
    assert (b["legal"] == -1).all() and b["valid"].all() and not b["m_tilde"].any()
    sl = CODEC.slots(CODEC.encode(images[1]))
    np.testing.assert_array_equal(b["slots"][1], sl.stacked()[:-1])
    np.testing.assert_allclose(b["pos"][1], np.stack([sl.y, sl.x], 1)[:-1], rtol=1e-6)
    assert data.class_statistics()["m_tilde_hist"].shape == (3, 1)
    with pytest.raises(DatasetError, match="sequence 0"):
        TokenDataset.from_sequences(CODEC, shape, data.tokens[:-1], np.array([0, n - 1]),
                                    np.zeros(1), np.zeros(1))


def tiny_raster_model(shape=(8, 8)):
    from wavar.model.transformer import WaveletGPT
    from wavar.train.config import TrainConfig

    cfg = TrainConfig(model="tiny", codec={**CODEC.params(), "image_shape": list(shape),
                                           "classes": ["a", "b", "c"], "m_tilde_min": 0,
                                           "m_tilde_hist": [[1]] * 3},
                      model_args={"num_classes": 3, "max_seq_len": int(np.prod(shape)),
                                  "n_channels": shape[2] if len(shape) == 3 else 1})
    torch.manual_seed(0)
    return WaveletGPT(cfg.model_config())


def test_tiny_model_trains_on_and_samples_raster_images(rng):
    from wavar.eval.likelihood import nll
    from wavar.model.transformer import loss_bits
    from wavar.sample.generate import decode, generate
    from wavar.train.loop import batch_to_device

    model = tiny_raster_model()
    assert model.config.vocab_size == 256
    images = np.stack([smooth_image(rng, 8, 8) for _ in range(4)])
    data = token_dataset(images, np.array([0, 1, 2, 0]))
    batch = batch_to_device(data.batch(np.arange(4)), torch.device("cpu"))
    bits, n = loss_bits(model(batch), batch)
    # the zero head is the uniform law over all 256 values: 8 bits per pixel
    assert int(n) == 4 * 64 and bits.item() / int(n) == pytest.approx(8.0)
    bits.backward()
    assert model.head.weight.grad.abs().sum() > 0
    assert nll(model.eval(), data)["bits_per_dim"] == pytest.approx(8.0)

    with torch.no_grad():  # a non-uniform head, so sampling and guidance see real logits
        model.head.weight.normal_(0, 0.5)
    seqs = generate(model, [0, 1], seed=0, cfg=2.0)
    assert [len(s) for s in seqs] == [64, 64]
    imgs = decode(model, seqs)
    assert all(im.shape == (8, 8) and im.dtype == np.uint8 for im in imgs)
    again = generate(model, [0, 1], seed=0, cfg=2.0)
    assert all(np.array_equal(a.tokens, b.tokens) for a, b in zip(seqs, again, strict=True))
    short = generate(model, [2], seed=1, max_tokens=10)
    assert len(short[0]) == 10 and decode(model, short)[0].shape == (8, 8)


def test_bit_plane_controls_are_refused_for_raster_models_with_the_way_that_works(rng):
    """A raster sequence has no bit-planes: a plane cap, a per-plane schedule or a prefix of
    planes would be silently ignored (or force the whole image), so each is refused and the
    error names the pixel-count control that does the job; a prefix of tokens works."""
    from wavar.sample.generate import generate, prefix_tokens

    model = tiny_raster_model().eval()
    with pytest.raises(ValueError, match=r"no bit-planes \(max_tokens"):
        generate(model, [0], seed=0, max_plane=1)
    with pytest.raises(ValueError, match="per bit-plane needs a wavelet-language model"):
        generate(model, [0], seed=0, temperature=(1.0, 0.8))
    img = smooth_image(rng, 8, 8)
    with pytest.raises(ValueError, match="tokens=N"):
        prefix_tokens(CODEC, img, planes=2)
    pre = prefix_tokens(CODEC, img, tokens=32)  # the top half
    (seq,) = generate(model, [1], seed=0, prefix=[pre.tokens])
    assert np.array_equal(seq.tokens[:32], img.reshape(-1)[:32]) and len(seq) == 64
