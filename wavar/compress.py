"""Compressed image files (``.wvc``): an image's token sequence range-coded with a model's
probabilities.

>>> from wavar import WaveletGPT                                      # doctest: +SKIP
>>> model = WaveletGPT.from_pretrained("mnist")                       # doctest: +SKIP
>>> data = compress(model, img, model_name="mnist")                   # doctest: +SKIP
>>> decompress(data).shape                                            # doctest: +SKIP

How it works. The image is coded by the model's codec; each token is then range-coded
(``constriction``'s queue coder, 32-bit words) with the model's grammar-masked probability of
it given the tokens before it (KV cache, float32 on the CPU or a GPU: :func:`_block_models`).
Encoder and decoder must agree bit for bit on every probability, so the float probabilities
over the *legal* tokens are quantised to integers summing to ``2**16`` (every legal token at
least 1, the rest by floor and the remainder to the largest; :func:`quantise`), and the range
coder sees only those integers. Both sides run the same step function on the same prefix; a
slot with one legal token costs no bits and is not coded. Agreement holds for the same
torch build and thread count; another machine may round a logit differently, and the file
then decodes to wrong tokens (the payload CRC guards the bytes, not the model's arithmetic).

Raster models. A pixel model (the raster language: one 256-way token a pixel, no grammar)
codes the same way, every token legal at every step: a lossless file of the image, and a byte
prefix decodes to its first pixels in raster order (the rest 0), not to a coarser image.
``planes`` is refused for it (a raster sequence has no bit-planes).

Progressive decoding. A range coder's stream is a number in nested intervals; the words after
token ``t`` was coded only narrow the interval further. Let ``w_t`` be the stream's size
after coding tokens ``0..t`` and flushing (``num_words``): the interval's lower end is exact
within ``w_t + 1`` words, so the first ``W >= w_t + 1`` words of the full stream, padded with
zeros, still lie in token ``t``'s interval. The decoder therefore re-encodes what it decodes,
and from a prefix of ``W`` words keeps the tokens whose ``w_t + 1 <= W``: a byte prefix of the
payload decodes to a prefix of the original tokens, and the last 1-2 words of any prefix
(the range coder's pending state) buy no token. ``n_bytes`` is rounded down to whole words.

The shortest payload. The flushed stream ends in whole words, up to ~2 bytes of them not needed
to tell the last token's interval. The payload is the stream's words big-endian (most
significant byte first, so that a byte prefix is a coarser number) cut to the fewest bytes that
still decode to every token when the reader pads them with zeros: for each shorter length the
cut stream and the cut stream plus one in its last byte are the only candidates (the shortest
number in the final interval is one of them), checked by decoding again with the quantised
models the encoder used, without the network (:func:`_shortest_payload`). A payload so cut, or
rounded up, still obeys the prefix rule above (a rounded-up number is larger, and its first
``W`` words no smaller than the stream's). This saves ~1.5 bytes a file: for MNIST's ~42-byte
payloads, a gap to the model's code length of <1% instead of ~3%.

Blocks of files. :func:`compress_many` codes images in blocks of ``rows`` rows stepped
together (one model step for the block: ~``rows`` times the throughput of one row). A row's
probabilities depend only on its own tokens when the block's size and the row's place in it
are fixed (the CPU's matrix kernels do not mix rows; a block of 1 and of 16 do differ in the
last bits), so each file records both, and :func:`decompress` decodes a file alone in a block
of that size at that place, the other rows idle; :func:`decompress_many` decodes files
together, one block per set of places. A block's cache spans the model's ``max_seq_len``, so
its attention shapes depend on the step alone.

Files coded on a GPU. A model on a CUDA device codes blocks there (float32, TF32 off for the
coding: :func:`_exact_float32`), hundreds of rows a step. A GPU's kernels, like the CPU's, do
not mix rows and depend on the shapes alone, but they round differently from the CPU's and
from another GPU's or library's, so such a file (version 5) records its device tag (the GPU's
name, torch's and CUDA's versions: :func:`device_tag`) and decodes only where the tag is the
same; elsewhere :class:`DeviceMismatchError` names what it needs. The file decides where it
is decoded: :func:`decompress` moves a copy of the model there (a CPU file decodes on the CPU
whatever device the given model is on).

File layout (little-endian)::

    magic   4s   b"WVC1"
    version u8   3 (coded alone), or 4 (coded in a block: the two fields before crc_hdr), or
                 5 (coded on a GPU: those two fields and the device tag); 1 and 2, from
                 earlier releases, are read too (see below)
    name    u8 length + utf-8: the model's zoo name (or "" for a model loaded from a folder)
    weights 8s   first 8 bytes of the sha256 of the model's float32 state dict
    height u16, width u16, channels u8, m_tilde i8
    label   u16  the class used (num_classes = the null label: unconditional)
    n_tok   u32  tokens coded
    n_pay   u32  payload bytes
    crc_pay u32  CRC32 of the payload
    rows    u16  version 4: rows of the block it was coded in
    row     u16  version 4: its row in the block
    device  u8 length + utf-8: version 5: the device tag (:func:`device_tag`)
    crc_hdr u32  CRC32 of everything before it
    payload      the range coder's 32-bit words, big-endian, cut to the shortest payload

Versions 1 and 2 (alone, in a block) stored the payload as whole words little-endian, uncut.

Archives (version 6). A file of one small image is mostly header (an MNIST file from the 5.6M
model: ~42 payload bytes, 49 header bytes, 90 with a GPU's device tag). An archive holds many
files of one model, image shape, device and block size: what they share once, what differs
per file (row, m~, label, token and payload counts as varints, a name), then the payloads
back to back. :func:`pack_archive` and :func:`unpack_archive` are exact inverses on files of
versions 3-5 (the files come back byte for byte), so an archive decodes as its files do::

    magic "WVC1", version u8 6, name u8 + utf-8, weights 8s, height u16, width u16,
    channels u8, rows u16, device u8 + utf-8, count varint,
    count x (row varint, m_tilde i8, label varint, n_tok varint, n_pay varint,
             file name varint + utf-8),
    crc_pay u32 (CRC32 of the payloads back to back), crc_hdr u32, payloads
"""

from __future__ import annotations

import copy
import hashlib
import struct
import zlib
from contextlib import contextmanager

import numpy as np
import torch

from wavar.codec import Codec, WaveletCodec
from wavar.codec.bitstream import CodedImage, Header
from wavar.codec.raster import ALL_LEGAL
from wavar.errors import (
    DeviceMismatchError,
    FileFormatError,
    ModelMismatchError,
    SamplingMemoryError,
)
from wavar.sample.cpu_loop import host_logits
from wavar.sample.generate import codec_of, prefix_tokens
from wavar.sample.planning import CACHE_SHARE, REFUSE_SHARE, cache_bytes, rows_that_fit, size_text
from wavar.sample.steps import StepInputs, TorchStep

MAGIC = b"WVC1"
VERSION, BLOCK_VERSION, DEVICE_VERSION = 3, 4, 5  # what this wavar writes: a file coded
# alone or in a block on the CPU, a file coded on a GPU
VERSIONS = (1, 2, 3, 4, 5)  # what it reads; 2, 4 and 5 carry the block fields; 1-2 whole LE words
ARCHIVE_VERSION = 6  # many files in one (pack_archive)
TOTAL = 1 << 16  # the quantised frequencies of a step sum to this
_FIXED = struct.Struct("<8sHHBbHIII")
_BLOCK = struct.Struct("<HH")  # versions 2 and 4: rows of the block, this file's row


def weights_hash(model) -> str:
    """16 hex digits of the sha256 of the model's state dict (float32, sorted keys)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def device_tag(device: torch.device | str) -> str:
    """What a file coded on ``device`` needs to decode again: "" for the CPU (files of
    versions 3-4, which record no device), else the GPU's name and torch's and CUDA's
    versions, e.g. ``"NVIDIA H200; torch 2.11.0+cu128; CUDA 12.8"``."""
    device = torch.device(device)
    if device.type == "cpu":
        return ""
    if device.type != "cuda":
        raise ValueError(f"compression runs on the CPU or a CUDA GPU, not on {device}")
    return (f"{torch.cuda.get_device_name(device)}; torch {torch.__version__}; "
            f"CUDA {torch.version.cuda}")


@contextmanager
def _exact_float32():
    """Full float32 matrix products while coding (TF32 off): a user's global TF32 setting
    must not change the probabilities between the encoder and the decoder."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def quantise(probs: np.ndarray) -> np.ndarray:
    """Integer frequencies (int64) summing to :data:`TOTAL`, each at least 1, from float32
    probabilities of the legal tokens: floors, then the remainder one each to the largest
    (stable order: ties go to the lower index). Pure numpy, so both sides agree."""
    p = np.asarray(probs, np.float64)
    n = len(p)
    spare = TOTAL - n
    f = np.floor(p / p.sum() * spare).astype(np.int64)
    rest = spare - int(f.sum())
    order = np.argsort(-p, kind="stable")
    f[order[np.arange(rest) % n]] += 1
    return f + 1


def _legal_ids(vocab_size: int):
    """``ids(mask)``: the token ids a grammar's legal mask allows (cached by mask); the raster
    language's :data:`ALL_LEGAL` (-1) allows every token."""
    bits, cache = np.arange(min(vocab_size, 63)), {}

    def ids(mask: int) -> np.ndarray:
        if mask not in cache:
            cache[mask] = (np.arange(vocab_size) if mask == ALL_LEGAL
                           else np.flatnonzero((mask >> bits) & 1))
        return cache[mask]

    return ids


def _block_models(model, codec: Codec, shape: tuple[int, int, int], rows: int,
                  members: dict[int, tuple[int, int, int]], choose,
                  advice: str = "") -> dict[int, np.ndarray]:
    """Step a block of ``rows`` sequences together. ``members`` maps a row to its (m~, label,
    most tokens); the other rows are idle. At each step with more than one legal token,
    ``choose(row, t, legal_ids, freqs, probs)`` returns the row's token, or None to stop the
    row; a step with one legal token takes it (the model still sees it; ``choose`` gets None
    for freqs and may stop the row). Returns each member's tokens (uint8).

    One row alone (``rows == 1``) keeps a cache of its own length (a file coded alone); a block
    keeps ``max_seq_len``, so that a row's arithmetic does not depend on the other rows. The
    model runs where it is (the CPU or a GPU); its logits come to the host once a step.
    A cache larger than the device's free memory allows is refused before it is allocated
    (:class:`SamplingMemoryError`, ending with ``advice``)."""
    device = next(model.parameters()).device
    first = next(iter(members.values()))
    m_tilde = [members.get(r, first)[0] for r in range(rows)]
    states = codec.batch_state(*shape, m_tilde)
    live = np.zeros(rows, bool)
    live[list(members)] = True
    todo = np.array([members[r][2] if r in members else 0 for r in range(rows)])
    limit = int(todo.max())
    context = bool(model.config.decoder_state)
    length = max(limit, 1) if rows == 1 else model.config.max_seq_len
    _check_memory(model, rows, length, device, advice)
    cache = model.new_cache(rows, length, device=device, dtype=torch.float32)
    lab = torch.tensor([members.get(r, first)[1] for r in range(rows)], device=device)
    mt = torch.tensor(m_tilde, device=device)
    step = TorchStep(model)
    out: dict[int, list[int]] = {r: [] for r in members}
    legal_ids = _legal_ids(model.config.vocab_size)
    prev = None
    with _exact_float32():  # once for the whole coding, not per step
        for t in range(limit):
            live &= ~states.done & (t < todo)
            if not live.any():
                break
            inputs = StepInputs(*states.slots(), states.context() if context else None)
            for a in inputs:  # idle rows: valid inputs, ignored
                a[~live] = 0
            legal = states.legal()
            logits = host_logits(model, step, cache, lab, mt, prev, inputs.to(device), t)
            logits = logits.cpu().numpy().astype(np.float32, copy=False)
            tok = np.full(rows, -1, np.int64)
            for r in np.flatnonzero(live):
                ids = legal_ids(int(legal[r]))
                if len(ids) == 1:  # forced by the grammar: no bits
                    got = None if choose(r, t, ids, None, None) is None else int(ids[0])
                else:
                    z = logits[r, ids]
                    e = np.exp(z - z.max())
                    probs = e / e.sum()
                    got = choose(r, t, ids, quantise(probs), probs)
                if got is None:
                    live[r] = False
                    continue
                tok[r] = got
                out[r].append(got)
            states.push(tok)
            prev = torch.as_tensor(np.maximum(tok, 0), device=device)
    return {r: np.array(v, np.uint8) for r, v in out.items()}


def _check_memory(model, rows: int, length: int, device: torch.device, advice: str) -> None:
    """Refuse a block whose float32 cache would outgrow ``REFUSE_SHARE`` of the free memory,
    rather than die in the allocation or be killed mid-file; the advice names the rows that
    fit ``CACHE_SHARE`` of it, the share sampling plans with (so that a block that fitted once
    still fits after an earlier one left a little less memory free)."""
    row = cache_bytes(model, 1, length, element_size=4)
    most, free = rows_that_fit(row, device, REFUSE_SHARE)
    if most is not None and rows > most:
        fit, _ = rows_that_fit(row, device)
        raise SamplingMemoryError(
            f"a block of {rows:,} rows keeps {size_text(rows * row)} of key/value cache "
            f"({length:,} positions a row, float32); {device} has {size_text(free)} free, "
            f"{CACHE_SHARE:.0%} of it planned for the cache: {fit:,} rows a block" + advice)


def _check_model(model) -> Codec:
    codec = codec_of(model)
    p = next(model.parameters())
    if p.device.type not in ("cpu", "cuda") or p.dtype != torch.float32:
        raise ValueError("compression runs the model in float32 on the CPU or a CUDA GPU "
                         f"(bit-exact probabilities); this one is {p.dtype} on {p.device}")
    return codec


def _placed(model, tag: str, placed: dict):
    """``model`` where a file with device tag ``tag`` decodes (a copy if it is elsewhere;
    ``placed`` keeps the copies by tag), or :class:`DeviceMismatchError`."""
    if tag in placed:
        return placed[tag]
    device = torch.device("cpu")
    if tag:
        here = device_tag("cuda") if torch.cuda.is_available() else "no CUDA device"
        if here != tag:
            raise DeviceMismatchError(f"this file was coded on a GPU ({tag}) and decodes only "
                                      f"on the same GPU, torch and CUDA; this machine has "
                                      f"{here}")
        device = torch.device("cuda")
    on = next(model.parameters()).device
    placed[tag] = model if on.type == device.type else copy.deepcopy(model).to(device)
    return placed[tag]


def _sequences(model, images, label: int | None, planes: int | None, lossless: bool,
               tokens: int | None = None) -> tuple[Codec, int, list[CodedImage]]:
    """What :func:`compress` and :func:`compress_many` code: the codec, the class (default the
    null label) and each image's sequence (its first ``planes`` planes, or ``tokens``
    tokens), all checked."""
    codec = _check_model(model)
    if lossless and not codec.lossless:
        raise ValueError(f"--lossless needs a lossless model (e.g. cifar10-lossless); this "
                         f"model's codec {codec!r} is lossy")
    label = model.config.num_classes if label is None else int(label)
    if not 0 <= label <= model.config.num_classes:
        raise ValueError(f"class {label} out of range [0, {model.config.num_classes}]")
    if planes is not None and not isinstance(codec, WaveletCodec):
        raise ValueError("--planes needs a wavelet-language model: a raster sequence has no "
                         "bit-planes (--bytes or --tokens keeps the first rows of a raster "
                         "image)")
    if tokens is not None and tokens < 0:
        raise ValueError(f"tokens must be >= 0, got {tokens}")
    seqs = [prefix_tokens(codec, img, planes, tokens) for img in images]
    for s in seqs:
        if len(s) > model.config.max_seq_len:
            raise ValueError(f"the image takes {len(s)} tokens, more than the model's "
                             f"{model.config.max_seq_len}")
    return codec, label, seqs


def _categorical(freqs: np.ndarray):
    import constriction

    # exact ratios of integers: constriction's own (deterministic) quantisation sees the same
    # floats on both sides
    return constriction.stream.model.Categorical(freqs / TOTAL, perfect=False)


def _words(payload: bytes, version: int) -> np.ndarray:
    """A payload's 32-bit words: big-endian, missing tail bytes zero (version 3), or whole
    little-endian words (versions 1-2)."""
    if version < 3:
        return np.frombuffer(payload[: len(payload) // 4 * 4], "<u4").astype(np.uint32)
    return np.frombuffer(payload + bytes(-len(payload) % 4), ">u4").astype(np.uint32)


def _decodes(payload: bytes, coded: list) -> bool:
    """Whether ``payload``, read as :class:`_FileDecoder` reads it, gives back every coded
    (model, symbol)."""
    import constriction

    dec = constriction.stream.queue.RangeDecoder(
        np.concatenate([_words(payload, VERSION), np.zeros(8, np.uint32)]))
    try:
        return all(int(dec.decode(m)) == j for m, j in coded)
    except AssertionError:  # constriction: a number no encoder could have written
        return False


def _shortest_payload(words: np.ndarray, coded: list) -> bytes:
    """The fewest big-endian bytes that still decode to the coded symbols (module docstring)."""
    data = words.astype(">u4").tobytes()
    best = data
    for k in range(len(data) - 1, -1, -1):
        cut = data[:k]
        up = int.from_bytes(cut, "big") + 1  # the cut rounded up in its last byte
        tries = [cut] + ([up.to_bytes(k, "big")] if any(data[k:]) and up < 256**k else [])
        found = next((c for c in tries if _decodes(c, coded)), None)
        if found is None:  # no number of k bytes lies in the final interval: none shorter
            break
        best = found
    return best


class _Encoder:
    """One file's range encoder, keeping what it coded to cut the payload short at the end."""

    def __init__(self) -> None:
        import constriction

        self.enc = constriction.stream.queue.RangeEncoder()
        self.coded: list = []  # (quantised model, symbol) of every coded token

    def encode(self, j: int, freqs: np.ndarray) -> None:
        m = _categorical(freqs)
        self.enc.encode(np.array([j], np.int32), m)
        self.coded.append((m, j))

    def num_words(self) -> int:  # the stream's size if flushed now
        return self.enc.num_words()

    def payload(self) -> bytes:
        return _shortest_payload(self.enc.get_compressed(), self.coded)


def code_tokens(model, seq: CodedImage, label: int):
    """Range-code all of ``seq``: (words uint32 of each prefix's flushed stream size per token
    coded, the payload bytes, model bits per token). Internal to :func:`compress`."""
    codec = _check_model(model)
    enc = _Encoder()
    toks = seq.tokens.astype(np.int64)
    sizes = np.zeros(len(toks), np.int64)  # flushed stream words after token t
    bits = np.zeros(len(toks))

    def choose(t, ids, freqs, probs):
        tok = int(toks[t])
        if freqs is not None:
            j = int(np.flatnonzero(ids == tok)[0])
            enc.encode(j, freqs)
            bits[t] = -np.log2(float(probs[j]))
        sizes[t] = enc.num_words()
        return tok

    h = seq.header
    got = _block_models(model, codec, (h.height, h.width, h.channels), 1,
                        {0: (h.m_tilde, label, len(toks))}, lambda r, *a: choose(*a))[0]
    if not np.array_equal(got, seq.tokens):
        raise RuntimeError("the model's steps did not follow the sequence")  # a bug, not input
    return sizes, enc.payload(), bits


def _pack(name: str, whash: str, header: Header, label: int, n_tok: int,
          payload: bytes, rows: int = 1, row: int = 0, tag: str = "") -> bytes:
    nm, tg = name.encode(), tag.encode()
    if len(nm) > 255 or len(tg) > 255:
        raise ValueError(f"model name or device tag too long for the file header: {name!r}, "
                         f"{tag!r}")
    version = DEVICE_VERSION if tag else VERSION if rows == 1 else BLOCK_VERSION
    head = (MAGIC + bytes([version, len(nm)]) + nm
            + _FIXED.pack(bytes.fromhex(whash), header.height, header.width, header.channels,
                          header.m_tilde, label, n_tok, len(payload), zlib.crc32(payload))
            + (b"" if version == VERSION else _BLOCK.pack(rows, row))
            + (bytes([len(tg)]) + tg if tag else b""))
    return head + struct.pack("<I", zlib.crc32(head)) + payload


def compress(model, image: np.ndarray, model_name: str = "", label: int | None = None,
             planes: int | None = None, max_bytes: int | None = None,
             lossless: bool = False, tokens: int | None = None) -> bytes:
    """A ``.wvc`` file of ``image`` (uint8, the model's image shape) coded with ``model``.

    ``label``: the class to condition on (default: the null label, unconditional).
    ``planes``: code only the first K bit-planes. ``max_bytes``: the longest token prefix
    whose whole file fits in this many bytes. ``lossless``: refuse a model whose codec is not
    lossless. ``tokens``: code only the first K tokens (all if the sequence is shorter).
    ``model_name``: the zoo name recorded so :func:`decompress` can load the model.
    """
    _, label, (seq,) = _sequences(model, [image], label, planes, lossless, tokens)
    sizes, payload, _ = code_tokens(model, seq, label)
    whash, tag = weights_hash(model), device_tag(next(model.parameters()).device)
    k = len(seq)
    if max_bytes is not None:
        over = len(_pack(model_name, whash, seq.header, label, 0, b"", tag=tag)) + 4  # + slack
        fits = np.flatnonzero(4 * sizes + over <= max_bytes)
        k = int(fits[-1]) + 1 if fits.size else 0
        if k < len(seq):
            seq = seq[:k]
            _, payload, _ = code_tokens(model, seq, label)
    return _pack(model_name, whash, seq.header, label, k, payload, tag=tag)


def read_header(data: bytes) -> dict:
    """The fields of a ``.wvc`` file's header; :class:`FileFormatError` if it is not one, or
    is truncated or corrupted."""
    if len(data) < 6 or data[:4] != MAGIC:
        raise FileFormatError("not a wavar compressed file (.wvc): bad magic")
    if data[4] == ARCHIVE_VERSION:
        raise FileFormatError("this is an archive of several .wvc files: read it with "
                              "unpack_archive (wavar decompress ARCHIVE -o FOLDER)")
    if data[4] not in VERSIONS:
        raise FileFormatError(f"unsupported .wvc version {data[4]} (this wavar reads "
                              f"{', '.join(map(str, VERSIONS))})")
    blocked = data[4] in (2, 4, 5)  # the rows and row fields
    end = 6 + data[5] + _FIXED.size + (_BLOCK.size if blocked else 0)
    tag = b""
    if data[4] == DEVICE_VERSION:  # the device tag, its length first
        if len(data) <= end:
            raise FileFormatError(f"truncated .wvc header ({len(data)} bytes)")
        tag, end = data[end + 1 : end + 1 + data[end]], end + 1 + data[end]
    if len(data) < end + 4:
        raise FileFormatError(f"truncated .wvc header ({len(data)} bytes)")
    if zlib.crc32(data[:end]) != struct.unpack_from("<I", data, end)[0]:
        raise FileFormatError(".wvc header is corrupted (CRC mismatch)")
    name = data[6:6 + data[5]].decode()
    wh, h, w, c, mt, label, n_tok, n_pay, crc = _FIXED.unpack_from(data, 6 + data[5])
    rows, row = _BLOCK.unpack_from(data, 6 + data[5] + _FIXED.size) if blocked else (1, 0)
    if not row < rows:
        raise FileFormatError(f".wvc header names row {row} of a block of {rows}")
    return dict(model=name, weights=wh.hex(), height=h, width=w, channels=c, m_tilde=mt,
                label=label, n_tokens=n_tok, payload_bytes=n_pay, payload_crc=crc,
                rows=rows, row=row, device=tag.decode(errors="replace"), version=data[4],
                payload_offset=end + 4)


def compress_many(model, images, model_name: str = "", label: int | None = None,
                  planes: int | None = None, rows: int = 16, lossless: bool = False,
                  code_bits: list | None = None, tokens: int | None = None) -> list[bytes]:
    """``.wvc`` files of ``images`` (uint8, the model's image shape each), coded ``rows`` at
    a time in blocks stepped together (see the module docstring): the same files
    :func:`decompress` reads one by one. ``label``, ``planes``, ``lossless`` and ``tokens``
    as in :func:`compress`. ``code_bits``: a list to which each file's model code length is
    appended, in bits (-log2 of the float probabilities of its coded tokens, before
    quantising: what an ideal coder would spend; the payload's excess over it is the coder's
    and the quantisation's cost)."""
    if not 1 <= rows <= 65535:
        raise ValueError(f"rows must lie in [1, 65535], got {rows}")
    codec, label, seqs = _sequences(model, images, label, planes, lossless, tokens)
    whash, tag = weights_hash(model), device_tag(next(model.parameters()).device)
    files = []
    for start in range(0, len(seqs), rows):
        block = seqs[start : start + rows]
        h = block[0].header
        encoders = [_Encoder() for _ in block]
        bits = np.zeros(len(block))

        def choose(r, t, ids, freqs, probs, block=block, encoders=encoders, bits=bits):
            tok = int(block[r].tokens[t])
            if freqs is not None:
                j = int(np.flatnonzero(ids == tok)[0])
                encoders[r].encode(j, freqs)
                bits[r] -= np.log2(float(probs[j]))
            return tok

        got = _block_models(model, codec, (h.height, h.width, h.channels), rows,
                            {r: (s.header.m_tilde, label, len(s)) for r, s in enumerate(block)},
                            choose, advice="; code in smaller blocks (rows, --rows)")
        for r, s in enumerate(block):
            if not np.array_equal(got[r], s.tokens):
                raise RuntimeError("the model's steps did not follow the sequence")  # a bug
            files.append(_pack(model_name, whash, s.header, label, len(s),
                               encoders[r].payload(), rows, r, tag))
        if code_bits is not None:
            code_bits.extend(bits.tolist())
    return files


class _FileDecoder:
    """One file's side of a block decode: its range decoder, the shadow encoder that knows
    how many words each token needed, and where a byte prefix stops it."""

    def __init__(self, hd: dict, payload: bytes, n_bytes: int | None) -> None:
        import constriction

        self.hd = hd
        words = _words(payload, hd["version"])
        whole = n_bytes is None or int(n_bytes) >= len(payload)
        self.avail = len(words) if whole else max(int(n_bytes), 0) // 4
        # zeros past the kept words: the decoder reads ahead; tokens it decodes from them are
        # dropped by the w_t + 1 <= W rule (the module docstring)
        padded = np.concatenate([words[: self.avail], np.zeros(8, np.uint32)])
        self.dec = constriction.stream.queue.RangeDecoder(padded)
        self.truncated = self.avail < len(words)
        # re-encoding what is decoded tells where a prefix stops: a whole file needs none
        self.shadow = constriction.stream.queue.RangeEncoder() if self.truncated else None

    def choose(self, ids: np.ndarray, freqs: np.ndarray | None) -> int | None:
        if freqs is None:
            fits = not self.truncated or self.shadow.num_words() + 1 <= self.avail
            return int(ids[0]) if fits else None
        model_t = _categorical(freqs)
        try:
            j = int(self.dec.decode(model_t))
        except AssertionError:  # constriction: data no encoder could have written here
            if self.truncated:  # the zeros past a prefix: the prefix ends here
                return None
            raise FileFormatError("the payload does not decode under this model's "
                                  "probabilities (coded on another machine or torch "
                                  "build?)") from None
        if self.truncated:
            self.shadow.encode(np.array([j], np.int32), model_t)
            if self.shadow.num_words() + 1 > self.avail:
                return None
        return int(ids[j])


def _payload(data: bytes, hd: dict) -> bytes:
    """A file's payload (``hd``: its header), whole and undamaged, or :class:`FileFormatError`."""
    payload = data[hd["payload_offset"]:]
    if len(payload) != hd["payload_bytes"]:
        raise FileFormatError(f"truncated .wvc payload: {len(payload)} of "
                              f"{hd['payload_bytes']} bytes (decode a prefix with n_bytes / "
                              f"--bytes on the whole file)")
    if zlib.crc32(payload) != hd["payload_crc"]:
        raise FileFormatError(".wvc payload is corrupted (CRC mismatch)")
    return payload


def _open(data: bytes, model, whash: str | None = None) -> tuple[dict, bytes, object, str]:
    """Header, payload, model and the model's weights hash (``whash``, if known already) of
    a file, with every check the file allows."""
    hd = read_header(data)
    payload = _payload(data, hd)
    need = f"{hd['model']!r}" if hd["model"] else "an unnamed model"
    if model is None:
        if not hd["model"]:
            raise ModelMismatchError("this file was coded with a model loaded from a folder: "
                                     "pass that model (--model PATH)")
        from wavar.model.transformer import WaveletGPT

        model = WaveletGPT.from_pretrained(hd["model"])
    _check_model(model)
    whash = whash or weights_hash(model)
    if whash != hd["weights"]:
        raise ModelMismatchError(f"this file needs model {need} with weights "
                                 f"{hd['weights']}; the given model's weights are {whash}")
    return hd, payload, model, whash


def _decode_block(model, files: dict[int, _FileDecoder], rows: int) -> dict[int, CodedImage]:
    """Decode the files placed at rows of one block; row -> the tokens decoded."""
    codec = codec_of(model)
    first = next(iter(files.values())).hd
    shape = (first["height"], first["width"], first["channels"])
    toks = _block_models(model, codec, shape, rows,
                         {r: (f.hd["m_tilde"], f.hd["label"], f.hd["n_tokens"])
                          for r, f in files.items()},
                         lambda r, t, ids, freqs, probs: files[r].choose(ids, freqs),
                         advice=f"; these files were coded in blocks of {rows:,} rows and decode "
                         "only in a block of that size: decode where more memory is free")
    out = {}
    for r, f in files.items():
        if not f.truncated and len(toks[r]) != f.hd["n_tokens"]:
            raise FileFormatError(f"decoded {len(toks[r])} tokens, the header says "
                                  f"{f.hd['n_tokens']}")
        out[r] = CodedImage(toks[r], codec.header(*shape, f.hd["m_tilde"]))
    return out


def decompress_many(files, model=None) -> list[np.ndarray]:
    """The images of several ``.wvc`` files, decoded together: files coded in one block
    (:func:`compress_many`) share a block again; each file otherwise goes to the first block
    with its row free. Every file needs the same model."""
    files = list(files)
    if not files:
        return []
    placed: dict = {}  # device tag -> the model there
    # the first file loads the model (if none is given) and hashes its weights, once; every
    # other file must name the same weights (ModelMismatchError otherwise)
    opened = [_open(files[0], model)]
    model, whash = opened[0][2], opened[0][3]
    opened += [_open(data, model, whash) for data in files[1:]]
    blocks: list[tuple[int, dict[int, int]]] = []  # (rows, row -> file index)
    for i, (hd, *_) in enumerate(opened):
        kind = (hd["height"], hd["width"], hd["channels"], hd["device"])
        for rows, rows_files in blocks:
            here = opened[next(iter(rows_files.values()))][0]
            if rows == hd["rows"] and hd["row"] not in rows_files and kind == (
                    here["height"], here["width"], here["channels"], here["device"]):
                rows_files[hd["row"]] = i
                break
        else:
            blocks.append((hd["rows"], {hd["row"]: i}))
    images: list[np.ndarray | None] = [None] * len(opened)
    codec = codec_of(model)
    for rows, rows_files in blocks:
        decoders = {r: _FileDecoder(opened[i][0], opened[i][1], None)
                    for r, i in rows_files.items()}
        tag = next(iter(decoders.values())).hd["device"]
        for r, seq in _decode_block(_placed(model, tag, placed), decoders, rows).items():
            images[rows_files[r]] = codec.decode(seq)
    return images


def decompress(data: bytes, model=None, n_bytes: int | None = None,
               return_tokens: bool = False):
    """The image (uint8) of a ``.wvc`` file; with ``n_bytes``, of the first ``n_bytes`` of its
    payload only (a coarser image: a prefix of the tokens, see the module docstring).

    ``model``: the model it was coded with (default: load the zoo model named in the file).
    With ``return_tokens``, returns the :class:`CodedImage` decoded instead of the image. A
    file coded in a block decodes at its place in a block of that size, the other rows idle,
    and on the device it was coded on (the model copied there if it is elsewhere).
    """
    hd, payload, model, _ = _open(data, model)
    model = _placed(model, hd["device"], {})
    seq = _decode_block(model, {hd["row"]: _FileDecoder(hd, payload, n_bytes)},
                        hd["rows"])[hd["row"]]
    return seq if return_tokens else codec_of(model).decode(seq)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


class _Reader:
    """Fields read in turn from an archive's header; :class:`FileFormatError` past its end."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise FileFormatError(f"truncated .wvc archive ({len(self.data)} bytes)")
        self.at += n
        return self.data[self.at - n : self.at]

    def varint(self) -> int:
        n = shift = 0
        while True:
            b = self.take(1)[0]
            n |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return n
            if shift > 63:
                raise FileFormatError("corrupted .wvc archive (a count runs on)")

    def text(self, length: int) -> str:
        return self.take(length).decode(errors="replace")


def is_archive(data: bytes) -> bool:
    """Whether ``data`` is a ``.wvc`` archive (:func:`pack_archive`) rather than one file."""
    return len(data) > 4 and data[:4] == MAGIC and data[4] == ARCHIVE_VERSION


def pack_archive(files, names=None) -> bytes:
    """One archive (version 6, module docstring) of ``.wvc`` files (versions 3-5, e.g. from
    :func:`compress_many`) coded with one model, on one device, for one image shape and block
    size; ``names`` (optional, one per file) come back from :func:`unpack_archive`."""
    files = list(files)
    names = [""] * len(files) if names is None else [str(n) for n in names]
    if not files or len(names) != len(files):
        raise ValueError(f"an archive needs files, and one name per file ({len(files)} files, "
                         f"{len(names)} names)")
    heads = [read_header(f) for f in files]
    for hd in heads:
        if hd["version"] < VERSION:
            raise ValueError(f"version-{hd['version']} files (whole words) do not go in an "
                             f"archive: code the image again")
    shared = ("model", "weights", "height", "width", "channels", "rows", "device")
    first = heads[0]
    for hd in heads[1:]:
        if any(hd[k] != first[k] for k in shared):
            raise ValueError("an archive holds files of one model, image shape, device and "
                             f"block size; these differ in "
                             f"{[k for k in shared if hd[k] != first[k]]}")
    nm, tg = first["model"].encode(), first["device"].encode()
    head = bytearray(MAGIC + bytes([ARCHIVE_VERSION, len(nm)]) + nm
                     + bytes.fromhex(first["weights"])
                     + struct.pack("<HHBH", first["height"], first["width"],
                                   first["channels"], first["rows"])
                     + bytes([len(tg)]) + tg + _varint(len(files)))
    payloads = b"".join(_payload(f, hd) for f, hd in zip(files, heads, strict=True))
    for hd, name in zip(heads, names, strict=True):
        nb = name.encode()
        head += (_varint(hd["row"]) + struct.pack("<b", hd["m_tilde"]) + _varint(hd["label"])
                 + _varint(hd["n_tokens"]) + _varint(hd["payload_bytes"]) + _varint(len(nb))
                 + nb)
    head += struct.pack("<I", zlib.crc32(payloads))
    return bytes(head) + struct.pack("<I", zlib.crc32(head)) + payloads


def unpack_archive(data: bytes) -> tuple[list[bytes], list[str]]:
    """The ``.wvc`` files of an archive, byte for byte as they went in, and their names;
    :class:`FileFormatError` for anything but a whole, undamaged archive."""
    if not is_archive(data):
        raise FileFormatError("not a .wvc archive (bad magic or version)")
    rd = _Reader(data)
    rd.take(5)
    model = rd.text(rd.take(1)[0])
    weights = rd.take(8)
    h, w, c, rows = struct.unpack("<HHBH", rd.take(7))
    tag = rd.text(rd.take(1)[0])
    count = rd.varint()
    if count > len(data):  # each entry takes bytes: a damaged count, not a huge archive
        raise FileFormatError(f"corrupted .wvc archive ({count} files in {len(data)} bytes)")
    entries = []
    for _ in range(count):
        row, (m_tilde,) = rd.varint(), struct.unpack("<b", rd.take(1))
        label, n_tok, n_pay = rd.varint(), rd.varint(), rd.varint()
        entries.append((row, m_tilde, label, n_tok, n_pay, rd.text(rd.varint())))
    (crc_pay,) = struct.unpack("<I", rd.take(4))
    (crc_hdr,) = struct.unpack("<I", rd.take(4))
    if zlib.crc32(data[: rd.at - 4]) != crc_hdr:
        raise FileFormatError(".wvc archive header is corrupted (CRC mismatch)")
    payloads, total = data[rd.at:], sum(e[4] for e in entries)
    if len(payloads) != total:
        raise FileFormatError(f"truncated .wvc archive: {len(payloads)} of {total} payload "
                              f"bytes")
    if zlib.crc32(payloads) != crc_pay:
        raise FileFormatError(".wvc archive payloads are corrupted (CRC mismatch)")
    files, at = [], 0
    for row, m_tilde, label, n_tok, n_pay, _ in entries:
        if not row < rows:
            raise FileFormatError(f".wvc archive names row {row} of a block of {rows}")
        if label > 0xFFFF or n_tok > 0xFFFFFFFF:  # what a file's header can hold
            raise FileFormatError(f".wvc archive entry out of range (class {label}, "
                                  f"{n_tok} tokens)")
        header = Header(height=h, width=w, channels=c, m_tilde=m_tilde)
        files.append(_pack(model, weights.hex(), header, label, n_tok,
                           payloads[at : at + n_pay], rows, row, tag))
        at += n_pay
    return files, [e[5] for e in entries]
