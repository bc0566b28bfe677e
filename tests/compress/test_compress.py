"""wavar.compress: .wvc files range-coded with the bundled MNIST model's probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wavar.cli.main import main
from wavar.compress import (
    code_tokens,
    compress,
    compress_many,
    decompress,
    decompress_many,
    quantise,
    read_header,
)
from wavar.errors import DeviceMismatchError, FileFormatError, ModelMismatchError
from wavar.model.transformer import WaveletGPT
from wavar.sample.generate import codec_of


@pytest.fixture(scope="module")
def model():
    return WaveletGPT.from_pretrained("mnist-small")


def digit(seed: int) -> np.ndarray:
    """A stroke-like 28 x 28 image: a ring and a bar at seeded places."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:28, :28]
    cy, cx, r = rng.integers(9, 19), rng.integers(9, 19), rng.integers(4, 8)
    ring = np.abs(np.hypot(yy - cy, xx - cx) - r) < 1.5
    bar = (np.abs(xx - rng.integers(6, 22)) < 2) & (yy > 4) & (yy < 24)
    return np.where(ring | bar, 255, 0).astype(np.uint8)


def test_quantise_sums_and_floors():
    f = quantise(np.array([1e-9, 0.5, 0.5 - 1e-9], np.float32))
    assert f.sum() == 1 << 16 and f.min() >= 1 and f[0] == 1
    assert np.array_equal(f, quantise(np.array([1e-9, 0.5, 0.5 - 1e-9], np.float32)))


def test_round_trip_bit_exact_and_near_model_bits(model):
    codec = codec_of(model)
    for seed in range(3):
        img = digit(seed)
        data = compress(model, img, model_name="mnist-small", planes=4)
        seq = codec.encode(img)
        got = decompress(data, model, return_tokens=True)
        k = read_header(data)["n_tokens"]
        assert 0 < k < len(seq) and np.array_equal(got.tokens, seq.tokens[:k])
        assert np.array_equal(decompress(data, model), codec.decode(seq, k))
        # the shortest payload that decodes: within 1% and two bytes above the model's code
        # length, and at most a byte below it (a short number can fall in the last token's
        # interval by luck, at odds of 1 in 256 a byte)
        _, _, bits = code_tokens(model, seq[:k], model.config.num_classes)
        pay = 8 * read_header(data)["payload_bytes"]
        assert bits.sum() - 8 <= pay <= 1.01 * bits.sum() + 16


def test_full_sequence_reproduces_the_codec(model):
    codec = codec_of(model)
    img = digit(7)
    data = compress(model, img, model_name="mnist-small")
    assert np.array_equal(decompress(data), codec.decode(codec.encode(img)))


def test_byte_prefix_decodes_to_token_prefix(model):
    codec = codec_of(model)
    img = digit(3)
    seq = codec.encode(img)
    data = compress(model, img, model_name="mnist-small", planes=4)
    n_pay = read_header(data)["payload_bytes"]
    lengths = []
    for nb in [*range(0, n_pay, 4), n_pay]:  # the payload ends where it is shortest
        got = decompress(data, model, n_bytes=nb, return_tokens=True)
        assert np.array_equal(got.tokens, seq.tokens[:len(got)])
        lengths.append(len(got))
    assert lengths == sorted(lengths) and lengths[0] == 0 and lengths[3] > 0
    assert lengths[-1] == read_header(data)["n_tokens"] and lengths[-2] < lengths[-1]


def test_version_1_files_still_decode(model, monkeypatch):
    """Files of the earlier layout (whole little-endian words, uncut) decode as before."""
    import wavar.compress as wc

    codec = codec_of(model)
    img = digit(6)
    with monkeypatch.context() as m:
        m.setattr(wc, "VERSION", 1)
        m.setattr(wc, "_shortest_payload", lambda words, coded: words.astype("<u4").tobytes())
        old = compress(model, img, model_name="mnist-small", planes=4)
    new = compress(model, img, model_name="mnist-small", planes=4)
    assert old[4] == 1 and new[4] == 3
    assert read_header(old)["payload_bytes"] % 4 == 0
    assert read_header(new)["payload_bytes"] < read_header(old)["payload_bytes"]
    k = read_header(old)["n_tokens"]
    assert np.array_equal(decompress(old, model), codec.decode(codec.encode(img), k))
    assert np.array_equal(decompress(old, model), decompress(new, model))


def test_the_shortest_payload_skips_cuts_the_range_decoder_rejects():
    """A cut (or a cut rounded up) can be a number no encoder writes: constriction then
    raises instead of decoding wrongly. That cut does not decode; the payload stays longer.
    (Found coding the first 20 MNIST test images in one block with the zoo's mnist.)"""
    from wavar.compress import _decodes, _Encoder

    rng = np.random.default_rng(1)
    for _ in range(233):  # trial 232 of this stream holds such a cut
        enc, n = _Encoder(), rng.integers(50, 400)
        for _ in range(n):
            k = rng.integers(2, 8)
            p = rng.dirichlet(np.ones(k) * 0.2).astype(np.float32)
            enc.encode(int(rng.choice(k, p=p / p.sum())), quantise(p))
    data = enc.enc.get_compressed().astype(">u4").tobytes()
    cut = data[:33]
    up = (int.from_bytes(cut, "big") + 1).to_bytes(33, "big")
    assert not _decodes(cut, enc.coded) and not _decodes(up, enc.coded)  # no exception
    payload = enc.payload()
    assert _decodes(payload, enc.coded) and len(payload) <= len(data)


def test_bytes_budget(model):
    img = digit(4)
    data = compress(model, img, model_name="mnist-small", max_bytes=60)
    assert len(data) <= 60 and read_header(data)["n_tokens"] > 0
    assert decompress(data, model).shape == (28, 28)


def test_corruption_and_wrong_model(model, tmp_path):
    data = compress(model, digit(5), model_name="mnist-small", planes=2)
    off = read_header(data)["payload_offset"]
    bad = bytearray(data)
    bad[off] ^= 1
    with pytest.raises(FileFormatError, match="payload is corrupted"):
        decompress(bytes(bad), model)
    bad = bytearray(data)
    bad[8] ^= 1
    with pytest.raises(FileFormatError, match="header is corrupted"):
        decompress(bytes(bad), model)
    with pytest.raises(FileFormatError, match="truncated"):
        decompress(data[:10], model)
    with pytest.raises(FileFormatError, match="truncated .wvc payload"):
        decompress(data[:-1], model)
    with pytest.raises(FileFormatError, match="magic"):
        decompress(b"WVAR" + data[4:], model)
    other = WaveletGPT.from_pretrained("fashion-mnist-small")
    with pytest.raises(ModelMismatchError, match="needs model 'mnist-small'"):
        decompress(data, other)
    with pytest.raises(ValueError, match="lossless"):
        compress(model, digit(5), lossless=True)


def test_files_coded_in_blocks_decode_alone_and_together(model):
    codec = codec_of(model)
    imgs = [digit(s) for s in range(10, 15)]
    bits: list[float] = []
    files = compress_many(model, imgs, model_name="mnist-small", planes=3, rows=4,  # 4 + 1
                          code_bits=bits)
    heads = [read_header(f) for f in files]
    # each file's model code length: the payload's within 1% and two bytes, and what the
    # same tokens cost coded alone (a block of 1 rounds differently in the last bits)
    assert len(bits) == len(files)
    for img, b, h in zip(imgs, bits, heads, strict=True):
        assert b - 8 <= 8 * h["payload_bytes"] <= 1.01 * b + 16
        alone = code_tokens(model, codec.encode(img)[: h["n_tokens"]],
                            model.config.num_classes)[2].sum()
        assert abs(b - alone) < 1e-3 * alone
    assert [(h["rows"], h["row"]) for h in heads] == [(4, 0), (4, 1), (4, 2), (4, 3), (4, 0)]
    assert {h["version"] for h in heads} == {4}
    want = []
    for img, f, h in zip(imgs, files, heads, strict=True):
        seq = codec.encode(img)
        k = int(np.sum(codec.slots(seq).plane[:-1] < 3))
        assert h["n_tokens"] == k > 0
        want.append(codec.decode(seq, k))
        # alone, at its row of an otherwise idle block: the block's arithmetic, bit for bit
        assert np.array_equal(decompress(f, model), want[-1])
    # together (files 0 and 4 share row 0: two blocks), and in another order
    got = decompress_many(files[::-1], model)
    for g, w in zip(got, want[::-1], strict=True):
        assert np.array_equal(g, w)
    # a byte prefix of a block's file decodes to a token prefix, as a one-row file does
    seq = codec.encode(imgs[2])
    part = decompress(files[2], model, n_bytes=heads[2]["payload_bytes"] // 2,
                      return_tokens=True)
    assert 0 < len(part) < heads[2]["n_tokens"]
    assert np.array_equal(part.tokens, seq.tokens[: len(part)])
    # the block's place is part of the header's CRC: another row is a corrupt file
    bad = bytearray(files[1])
    bad[read_header(files[1])["payload_offset"] - 6] ^= 1
    with pytest.raises(FileFormatError):
        decompress(bytes(bad), model)


def test_a_token_prefix_file_decodes_to_that_prefix(model, tmp_path):
    """--tokens K codes the first K tokens: the file says K and decodes to the codec's image
    of those K tokens, alone or coded in a block; past the sequence's end it codes all."""
    from wavar.imageio import read_image
    from wavar.viz import save_png

    codec = codec_of(model)
    img = digit(8)
    seq = codec.encode(img)
    for k in (0, 1, 57, len(seq) // 2):
        data = compress(model, img, model_name="mnist-small", tokens=k)
        assert read_header(data)["n_tokens"] == k
        assert np.array_equal(decompress(data, model), codec.decode(seq, k))
    whole = compress(model, img, model_name="mnist-small", tokens=10**6)
    assert whole == compress(model, img, model_name="mnist-small")
    files = compress_many(model, [img, digit(9)], "mnist-small", rows=2, tokens=40)
    assert [read_header(f)["n_tokens"] for f in files] == [40, 40]
    assert np.array_equal(decompress(files[0], model), codec.decode(seq, 40))
    with pytest.raises(ValueError, match="tokens must be >= 0"):
        compress(model, img, tokens=-1)
    save_png(tmp_path / "d.png", img)
    out = tmp_path / "d.wvc"
    assert main(["compress", str(tmp_path / "d.png"), "-o", str(out), "--model", "mnist-small",
                 "--tokens", "57"]) == 0
    assert read_header(out.read_bytes())["n_tokens"] == 57
    assert main(["decompress", str(out), "-o", str(tmp_path / "r.png")]) == 0
    assert np.array_equal(read_image(tmp_path / "r.png", "L"), codec.decode(seq, 57))
    assert main(["compress", str(tmp_path / "d.png"), "-o", str(out), "--model", "mnist-small",
                 "--tokens", "3", "--planes", "2"]) == 2  # one way of cutting at a time


def test_cli_round_trip(tmp_path, capsys):
    from wavar.viz import save_png

    img = digit(6)
    save_png(tmp_path / "d.png", img)
    out = tmp_path / "d.wvc"
    assert main(["compress", str(tmp_path / "d.png"), "-o", str(out), "--model", "mnist-small",
                 "--planes", "3", "--class", "1"]) == 0
    assert read_header(out.read_bytes())["label"] == 1
    assert main(["decompress", str(out), "-o", str(tmp_path / "r.png")]) == 0
    assert main(["decompress", str(out), "-o", str(tmp_path / "c.png"), "--bytes", "8"]) == 0
    assert (tmp_path / "r.png").is_file() and (tmp_path / "c.png").is_file()
    out.write_bytes(out.read_bytes()[:-2])
    assert main(["decompress", str(out), "-o", str(tmp_path / "x.png")]) == 1
    assert "truncated" in capsys.readouterr().err


def test_cli_several_images_go_to_a_folder(tmp_path, capsys, model):
    from wavar.imageio import read_image
    from wavar.viz import save_png

    codec = codec_of(model)
    imgs = [digit(s) for s in (20, 21, 22)]
    for i, img in enumerate(imgs):
        save_png(tmp_path / f"d{i}.png", img)
    pngs = [str(tmp_path / f"d{i}.png") for i in range(3)]
    codes = tmp_path / "codes"
    assert main(["compress", *pngs, "-o", str(codes), "--model", "mnist-small", "--planes", "2",
                 "--rows", "2"]) == 0
    files = sorted(codes.glob("*.wvc"))
    assert [f.name for f in files] == ["d0.wvc", "d1.wvc", "d2.wvc"]
    assert [read_header(f.read_bytes())["row"] for f in files] == [0, 1, 0]
    out = tmp_path / "out"
    assert main(["decompress", *map(str, files), "-o", str(out)]) == 0
    for i, img in enumerate(imgs):
        seq = codec.encode(img)
        k = int(np.sum(codec.slots(seq).plane[:-1] < 2))
        assert np.array_equal(read_image(out / f"d{i}.png", "L"), codec.decode(seq, k))
    capsys.readouterr()
    assert main(["compress", *pngs, "-o", str(tmp_path / "x.wvc"), "--model", "mnist-small",
                 "--bytes", "40"]) == 2
    assert "--bytes codes one image" in capsys.readouterr().err
    (tmp_path / "file").write_bytes(b"")
    assert main(["compress", *pngs, "-o", str(tmp_path / "file"), "--model", "mnist-small"]) == 2
    assert "names a folder" in capsys.readouterr().err


def as_coded_on(data: bytes, tag: str, model) -> bytes:
    """``data`` (a CPU file) with its header saying it was coded on the device ``tag``."""
    from wavar.compress import _pack

    hd = read_header(data)
    header = codec_of(model).header(hd["height"], hd["width"], hd["channels"], hd["m_tilde"])
    return _pack(hd["model"], hd["weights"], header, hd["label"], hd["n_tokens"],
                 data[hd["payload_offset"]:], hd["rows"], hd["row"], tag)


def test_files_coded_on_a_gpu_name_it_and_decode_only_there(model):
    """Version 5: a file coded on a GPU records the GPU, torch and CUDA; decoding it anywhere
    else is a clear error, never wrong pixels. (Coding on a GPU itself runs in the GPU
    benchmark, benchmarks/compress.py --device cuda.)"""
    from wavar.compress import device_tag

    assert device_tag("cpu") == ""
    with pytest.raises(ValueError, match="CPU or a CUDA GPU"):
        device_tag("meta")
    files = compress_many(model, [digit(s) for s in (20, 21)], model_name="mnist-small",
                          planes=2, rows=2)
    tag = "Imaginary GPU; torch 9.9; CUDA 99.9"
    gpu = as_coded_on(files[1], tag, model)
    hd = read_header(gpu)
    assert (hd["version"], hd["device"], hd["rows"], hd["row"]) == (5, tag, 2, 1)
    assert gpu[hd["payload_offset"]:] == files[1][read_header(files[1])["payload_offset"]:]
    assert read_header(files[1])["device"] == ""  # a CPU file: version 4, no tag
    with pytest.raises(DeviceMismatchError, match="coded on a GPU \\(Imaginary GPU; torch 9.9"):
        decompress(gpu, model)
    with pytest.raises(DeviceMismatchError, match="Imaginary GPU"):
        decompress_many([files[0], gpu], model)
    for cut in range(hd["payload_offset"] - len(tag) - 6, hd["payload_offset"]):
        with pytest.raises(FileFormatError, match="truncated .wvc header"):
            read_header(gpu[:cut])
    bad = bytearray(gpu)
    bad[hd["payload_offset"] - 8] ^= 1  # a letter of the tag: the header's CRC covers it
    with pytest.raises(FileFormatError, match="header is corrupted"):
        decompress(bytes(bad), model)


def test_coding_turns_tf32_off_and_restores_it():
    from wavar.compress import _exact_float32

    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with pytest.raises(RuntimeError), _exact_float32():
            assert not torch.backends.cuda.matmul.allow_tf32
            assert not torch.backends.cudnn.allow_tf32
            raise RuntimeError("inside")
        assert torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


@pytest.mark.slow
def test_a_lossless_model_round_trips_50_images_bit_exactly():
    """A lossless codec (cdf53, threshold 1) under a small model: every file decodes to its
    image's exact pixels. (The zoo's one lossless model, cifar10-lossless, takes ~1 minute an
    image each way on this CPU: benchmarks/compress.py checks it.)"""
    from wavar import WaveletCodec
    from wavar.model.transformer import config_from_preset

    codec = WaveletCodec("cdf53", final_threshold=1.0)
    cfg = config_from_preset("tiny", num_classes=2, max_seq_len=1024,
                             vocab_size=codec.lang.vocab_size)
    cfg.codec = {**codec.params(), "image_shape": [4, 4], "classes": ["a", "b"],
                 "m_tilde_min": 1, "m_tilde_hist": [[1] * 10] * 2}
    lossless = WaveletGPT(cfg).eval()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:4, :4]
    for i in range(50):
        img = np.clip(rng.integers(0, 200) + (yy * rng.integers(-20, 20) + xx * 7) % 50
                      + rng.integers(0, 8, (4, 4)), 0, 255).astype(np.uint8)
        data = compress(lossless, img, label=i % 2, lossless=True)
        assert np.array_equal(decompress(data, lossless), img), i


def test_an_archive_gives_back_its_files_byte_for_byte(model):
    from wavar.compress import is_archive, pack_archive, unpack_archive

    imgs = [digit(s) for s in range(30, 33)]
    files = compress_many(model, imgs, model_name="mnist-small", label=3, planes=2, rows=2)
    names = ["ü", "", "e" * 200]
    arc = pack_archive(files, names)
    assert is_archive(arc) and not is_archive(files[0])
    back, got_names = unpack_archive(arc)
    assert back == files and got_names == names
    # what the files share is stored once: each needs ~10 bytes besides its payload, not ~49
    payloads = sum(read_header(f)["payload_bytes"] for f in files)
    assert len(arc) - payloads - sum(len(n.encode()) for n in names) < 40 + 10 * len(files)
    assert len(pack_archive(files)) < sum(map(len, files)) - 30 * len(files)
    # (the same bytes decode as the files do: test_files_coded_in_blocks_decode_alone_...)
    # files coded alone (version 3) and on a GPU (version 5) go in too, unchanged
    alone = [compress(model, digit(s), model_name="mnist-small", planes=1) for s in (36, 37)]
    assert unpack_archive(pack_archive(alone))[0] == alone
    gpu = [as_coded_on(f, "Imaginary GPU; torch 9.9; CUDA 99.9", model) for f in files[:2]]
    assert unpack_archive(pack_archive(gpu))[0] == gpu
    with pytest.raises(ValueError, match="differ in \\['device'\\]"):
        pack_archive([files[0], gpu[0]])
    with pytest.raises(ValueError, match="differ in \\['rows'\\]"):
        pack_archive([files[0], alone[0]])
    with pytest.raises(FileFormatError, match="archive of several .wvc files"):
        decompress(arc, model)
    with pytest.raises(FileFormatError, match="truncated .wvc payload"):  # checked as decode does
        pack_archive([files[0][:-1]])


def test_a_damaged_archive_is_a_clear_error(model):
    from wavar.compress import pack_archive, unpack_archive

    arc = pack_archive(compress_many(model, [digit(40), digit(41)], planes=3, rows=2),
                       ["x", "y"])
    for cut in range(5, len(arc)):
        with pytest.raises(FileFormatError, match="truncated|corrupted"):
            unpack_archive(arc[:cut])
    rng = np.random.default_rng(0)
    for at in rng.choice(np.arange(5, len(arc)), 40, replace=False):
        bad = bytearray(arc)
        bad[at] ^= 1 << int(rng.integers(8))
        with pytest.raises(FileFormatError):
            unpack_archive(bytes(bad))
    # whole CRCs over fields no file header can hold: still a clear error
    import struct
    import zlib

    from wavar.compress import ARCHIVE_VERSION, MAGIC, _varint

    head = (MAGIC + bytes([ARCHIVE_VERSION, 1]) + b"m" + bytes(8)
            + struct.pack("<HHBH", 28, 28, 1, 1) + bytes([0]) + _varint(1) + _varint(0)
            + struct.pack("<b", 3) + _varint(70_000) + _varint(5) + _varint(3) + _varint(0)
            + struct.pack("<I", zlib.crc32(b"abc")))
    with pytest.raises(FileFormatError, match="out of range"):
        unpack_archive(head + struct.pack("<I", zlib.crc32(head)) + b"abc")


def test_cli_several_images_into_one_archive(tmp_path, capsys, model):
    from wavar.compress import is_archive, pack_archive, unpack_archive
    from wavar.imageio import read_image
    from wavar.viz import save_png

    codec = codec_of(model)
    imgs = [digit(s) for s in (50, 51, 52)]
    pngs = []
    for i, img in enumerate(imgs):
        save_png(tmp_path / f"d{i}.png", img)
        pngs.append(str(tmp_path / f"d{i}.png"))
    arc = tmp_path / "set.wvc"
    assert main(["compress", *pngs, "-o", str(arc), "--model", "mnist-small", "--rows", "2",
                 "--planes", "3"]) == 0
    assert "an archive of 3 images" in capsys.readouterr().out
    assert is_archive(arc.read_bytes())
    assert unpack_archive(arc.read_bytes())[1] == ["d0", "d1", "d2"]
    out = tmp_path / "out"
    assert main(["decompress", str(arc), "-o", str(out)]) == 0
    for i, img in enumerate(imgs):
        seq = codec.encode(img)
        k = int(np.sum(codec.slots(seq).plane[:-1] < 3))
        assert np.array_equal(read_image(out / f"d{i}.png", "L"), codec.decode(seq, k))
    capsys.readouterr()
    assert main(["decompress", str(arc), "-o", str(out), "--bytes", "10"]) == 2
    assert "is an archive" in capsys.readouterr().err
    # a name that would leave the folder is refused before anything is written
    files, _ = unpack_archive(arc.read_bytes())
    evil = tmp_path / "evil.wvc"
    evil.write_bytes(pack_archive(files, ["../escaped", "b", "c"]))
    assert main(["decompress", str(evil), "-o", str(tmp_path / "o2")]) == 2
    assert "not a plain file name" in capsys.readouterr().err
    assert not (tmp_path / "escaped.png").exists() and not (tmp_path / "o2").exists()


def test_a_raster_model_codes_50_images_losslessly_and_a_prefix_is_their_first_rows():
    """The raster language is lossless too (one 256-way token a pixel, no grammar: every
    token legal): 50 files coded in one block with the zoo's pixel baseline decode to their
    exact pixels; a byte prefix decodes to the image's first pixels, the rest 0; --planes,
    which a raster sequence has none of, is refused."""
    raster = WaveletGPT.from_pretrained("fashion-mnist-raster")
    images = [digit(100 + i) for i in range(50)]
    files = compress_many(raster, images, model_name="fashion-mnist-raster", label=3,
                          rows=50, lossless=True)
    back = decompress_many(files, raster)
    assert all(np.array_equal(b, img) for b, img in zip(back, images, strict=True))
    hd = read_header(files[7])
    assert hd["n_tokens"] == 784 and hd["m_tilde"] == 0
    # a two-level image: the model's probabilities code it below a raw bitmap's 1 bit a pixel
    # (40-57 bytes measured, even under a Fashion-MNIST model)
    assert hd["payload_bytes"] < 784 // 8
    seq = decompress(files[7], raster, n_bytes=hd["payload_bytes"] // 2, return_tokens=True)
    k = len(seq)
    assert 0 < k < 784
    flat = decompress(files[7], raster, n_bytes=hd["payload_bytes"] // 2).reshape(-1)
    assert np.array_equal(flat[:k], images[7].reshape(-1)[:k]) and not flat[k:].any()
    with pytest.raises(ValueError, match="raster sequence has no bit-planes"):
        compress(raster, images[0], planes=2)


def test_a_block_too_large_for_the_free_memory_is_refused_before_any_work(tmp_path, capsys,
                                                                           model, monkeypatch):
    import wavar.sample.planning as planning
    from wavar.errors import SamplingMemoryError
    from wavar.sample.planning import CACHE_SHARE, cache_bytes
    from wavar.viz import save_png

    imgs = [digit(s) for s in (60, 61, 62)]
    files = compress_many(model, imgs[:2], model_name="mnist-small", planes=2, rows=2)
    # free memory for a block of 3 rows (float32 cache of max_seq_len positions), not of 4
    row = cache_bytes(model, 1, model.config.max_seq_len, element_size=4)
    monkeypatch.setattr(planning, "free_memory", lambda device: int(3.5 * row / CACHE_SHARE))
    with pytest.raises(SamplingMemoryError, match=r"a block of 4 rows .*: 3 rows a block; "
                                                  r"code in smaller blocks"):
        compress_many(model, imgs, model_name="mnist-small", planes=2, rows=4)
    assert len(compress_many(model, imgs, model_name="mnist-small", planes=2, rows=3)) == 3
    # planned at CACHE_SHARE (3 rows here), refused only above REFUSE_SHARE: 4 rows pass
    monkeypatch.setattr(planning, "free_memory", lambda device: int(4.6 * row))
    assert len(compress_many(model, imgs, model_name="mnist-small", planes=2, rows=4)) == 3
    monkeypatch.setattr(planning, "free_memory", lambda device: int(3.5 * row / CACHE_SHARE))
    for i, img in enumerate(imgs):
        save_png(tmp_path / f"d{i}.png", img)
    pngs = [str(tmp_path / f"d{i}.png") for i in range(3)]
    capsys.readouterr()
    assert main(["compress", *pngs, "-o", str(tmp_path / "codes"), "--model", "mnist-small",
                 "--planes", "2", "--rows", "4"]) != 0
    assert "3 rows a block" in capsys.readouterr().err
    assert not (tmp_path / "codes").exists() or not any((tmp_path / "codes").iterdir())
    # files coded in blocks of 2 decode only in a block of 2: no smaller block to offer
    monkeypatch.setattr(planning, "free_memory", lambda device: int(1.5 * row / CACHE_SHARE))
    with pytest.raises(SamplingMemoryError, match="coded in blocks of 2 rows"):
        decompress_many(files, model)
    monkeypatch.setattr(planning, "free_memory", lambda device: None)  # unknown: no refusal
    assert len(decompress_many(files, model)) == 2
