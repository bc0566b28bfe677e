"""Compressed image files (``.wvc``): an image's token sequence range-coded with a model's
probabilities.

>>> from wavar import WaveletGPT                                      # doctest: +SKIP
>>> model = WaveletGPT.from_pretrained("mnist")                       # doctest: +SKIP
>>> data = compress(model, img, model_name="mnist")                   # doctest: +SKIP
>>> decompress(data).shape                                            # doctest: +SKIP

How it works. The image is coded by the model's codec; each token is then range-coded
(``constriction``'s queue coder, 32-bit words) with the model's grammar-masked probability of
it given the tokens before it (KV cache, one row, float32 on the CPU: :func:`_token_models`).
Encoder and decoder must agree bit for bit on every probability, so the float probabilities
over the *legal* tokens are quantised to integers summing to ``2**16`` (every legal token at
least 1, the rest by floor and the remainder to the largest; :func:`quantise`), and the range
coder sees only those integers. Both sides run the same step function on the same prefix; a
slot with one legal token costs no bits and is not coded. Agreement holds for the same
torch build and thread count; another machine may round a logit differently, and the file
then decodes to wrong tokens (the payload CRC guards the bytes, not the model's arithmetic).

Progressive decoding. A range coder's stream is a number in nested intervals; the words after
token ``t`` was coded only narrow the interval further. Let ``w_t`` be the stream's size
after coding tokens ``0..t`` and flushing (``num_words``): the interval's lower end is exact
within ``w_t + 1`` words, so the first ``W >= w_t + 1`` words of the full stream, padded with
zeros, still lie in token ``t``'s interval. The decoder therefore re-encodes what it decodes,
and from a prefix of ``W`` words keeps the tokens whose ``w_t + 1 <= W``: a byte prefix of the
payload decodes to a prefix of the original tokens, and the last 1-2 words of any prefix
(the range coder's pending state) buy no token. ``n_bytes`` is rounded down to whole words.

File layout (little-endian)::

    magic   4s   b"WVC1"
    version u8   1
    name    u8 length + utf-8: the model's zoo name (or "" for a model loaded from a folder)
    weights 8s   first 8 bytes of the sha256 of the model's float32 state dict
    height u16, width u16, channels u8, m_tilde i8
    label   u16  the class used (num_classes = the null label: unconditional)
    n_tok   u32  tokens coded
    n_pay   u32  payload bytes
    crc_pay u32  CRC32 of the payload
    crc_hdr u32  CRC32 of everything before it
    payload      the range coder's uint32 words
"""

from __future__ import annotations

import hashlib
import struct
import zlib

import numpy as np
import torch

from wavar.codec import WaveletCodec
from wavar.codec.bitstream import CodedImage, Header
from wavar.errors import FileFormatError, ModelMismatchError
from wavar.sample.cpu_loop import host_logits
from wavar.sample.generate import codec_of
from wavar.sample.steps import StepInputs, TorchStep

MAGIC = b"WVC1"
VERSION = 1
TOTAL = 1 << 16  # the quantised frequencies of a step sum to this
_FIXED = struct.Struct("<8sHHBbHIII")


def weights_hash(model) -> str:
    """16 hex digits of the sha256 of the model's state dict (float32, sorted keys)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


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


def _token_models(model, codec: WaveletCodec, header: Header, label: int, n: int, choose):
    """Step the model along a sequence of up to ``n`` tokens; at each step with more than one
    legal token call ``choose(t, legal_ids, freqs, probs)``, which returns the token (or None
    to stop); a step with one legal token takes it. Returns the tokens taken (uint8)."""
    states = codec.batch_state(header.height, header.width, header.channels, [header.m_tilde])
    context = bool(model.config.decoder_state)
    cache = model.new_cache(1, max(n, 1), device="cpu", dtype=torch.float32)
    lab = torch.tensor([label])
    mt = torch.tensor([header.m_tilde])
    step = TorchStep(model)
    out = []
    prev = None
    for t in range(n):
        if states.done[0]:
            break
        inputs = StepInputs(*states.slots(), states.context() if context else None)
        legal_mask = int(states.legal()[0])
        ids = np.array([v for v in range(model.config.vocab_size) if legal_mask >> v & 1],
                       np.int64)
        if len(ids) == 1:
            tok = int(ids[0])  # forced by the grammar: no bits, but the model still sees it
            if choose(t, ids, None, None) is None:
                break
        inputs = inputs.to(torch.device("cpu"))
        logits = host_logits(model, step, cache, lab, mt, prev, inputs, t)
        if len(ids) > 1:
            z = logits[0].numpy().astype(np.float32)[ids]
            e = np.exp(z - z.max())
            probs = e / e.sum()
            tok = choose(t, ids, quantise(probs), probs)
            if tok is None:
                break
        states.push(np.array([tok]))
        out.append(tok)
        prev = torch.tensor([tok])
    return np.array(out, np.uint8)


def _check_model(model) -> WaveletCodec:
    codec = codec_of(model)
    if not isinstance(codec, WaveletCodec):
        raise ValueError("compression needs a wavelet-language model (not a raster one)")
    p = next(model.parameters())
    if p.device.type != "cpu" or p.dtype != torch.float32:
        raise ValueError("compression runs the model in float32 on the CPU (bit-exact "
                         f"probabilities); this one is {p.dtype} on {p.device}")
    return codec


def _categorical(freqs: np.ndarray):
    import constriction

    # exact ratios of integers: constriction's own (deterministic) quantisation sees the same
    # floats on both sides
    return constriction.stream.model.Categorical(freqs / TOTAL, perfect=False)


def code_tokens(model, seq: CodedImage, label: int):
    """Range-code all of ``seq``: (words uint32 of each prefix's flushed stream size per token
    coded, the full stream, model bits per token). Internal to :func:`compress`."""
    import constriction

    codec = _check_model(model)
    enc = constriction.stream.queue.RangeEncoder()
    toks = seq.tokens.astype(np.int64)
    sizes = np.zeros(len(toks), np.int64)  # flushed stream words after token t
    bits = np.zeros(len(toks))

    def choose(t, ids, freqs, probs):
        tok = int(toks[t])
        if freqs is not None:
            j = int(np.flatnonzero(ids == tok)[0])
            enc.encode(np.array([j], np.int32), _categorical(freqs))
            bits[t] = -np.log2(float(probs[j]))
        sizes[t] = enc.num_words()
        return tok

    got = _token_models(model, codec, seq.header, label, len(toks), choose)
    if not np.array_equal(got, seq.tokens):
        raise RuntimeError("the model's steps did not follow the sequence")  # a bug, not input
    return sizes, enc.get_compressed(), bits


def _pack(name: str, whash: str, header: Header, label: int, n_tok: int,
          payload: bytes) -> bytes:
    nm = name.encode()
    if len(nm) > 255:
        raise ValueError(f"model name too long for the file header: {name!r}")
    head = (MAGIC + bytes([VERSION, len(nm)]) + nm
            + _FIXED.pack(bytes.fromhex(whash), header.height, header.width, header.channels,
                          header.m_tilde, label, n_tok, len(payload), zlib.crc32(payload)))
    return head + struct.pack("<I", zlib.crc32(head)) + payload


def compress(model, image: np.ndarray, model_name: str = "", label: int | None = None,
             planes: int | None = None, max_bytes: int | None = None,
             lossless: bool = False) -> bytes:
    """A ``.wvc`` file of ``image`` (uint8, the model's image shape) coded with ``model``.

    ``label``: the class to condition on (default: the null label, unconditional).
    ``planes``: code only the first K bit-planes. ``max_bytes``: the longest token prefix
    whose whole file fits in this many bytes. ``lossless``: refuse a model whose codec is not
    lossless. ``model_name``: the zoo name recorded so :func:`decompress` can load the model.
    """
    codec = _check_model(model)
    if lossless and not codec.lossless:
        raise ValueError(f"--lossless needs a lossless model (e.g. cifar10-lossless); this "
                         f"model's codec {codec!r} is lossy")
    label = model.config.num_classes if label is None else int(label)
    if not 0 <= label <= model.config.num_classes:
        raise ValueError(f"class {label} out of range [0, {model.config.num_classes}]")
    seq = codec.encode(image)
    if planes is not None:
        seq = seq[: int(np.sum(codec.slots(seq).plane[:-1] < planes))]
    if len(seq) > model.config.max_seq_len:
        raise ValueError(f"the image takes {len(seq)} tokens, more than the model's "
                         f"{model.config.max_seq_len}")
    sizes, words, _ = code_tokens(model, seq, label)
    whash = weights_hash(model)
    k = len(seq)
    if max_bytes is not None:
        over = len(_pack(model_name, whash, seq.header, label, 0, b"")) + 4  # header + slack
        fits = np.flatnonzero(4 * sizes + over <= max_bytes)
        k = int(fits[-1]) + 1 if fits.size else 0
        if k < len(seq):
            seq = seq[:k]
            _, words, _ = code_tokens(model, seq, label)
    return _pack(model_name, whash, seq.header, label, k, words.astype("<u4").tobytes())


def read_header(data: bytes) -> dict:
    """The fields of a ``.wvc`` file's header; :class:`FileFormatError` if it is not one, or
    is truncated or corrupted."""
    if len(data) < 6 or data[:4] != MAGIC:
        raise FileFormatError("not a wavar compressed file (.wvc): bad magic")
    if data[4] != VERSION:
        raise FileFormatError(f"unsupported .wvc version {data[4]} (this wavar reads {VERSION})")
    end = 6 + data[5] + _FIXED.size
    if len(data) < end + 4:
        raise FileFormatError(f"truncated .wvc header ({len(data)} bytes)")
    if zlib.crc32(data[:end]) != struct.unpack_from("<I", data, end)[0]:
        raise FileFormatError(".wvc header is corrupted (CRC mismatch)")
    name = data[6:6 + data[5]].decode()
    wh, h, w, c, mt, label, n_tok, n_pay, crc = _FIXED.unpack_from(data, 6 + data[5])
    return dict(model=name, weights=wh.hex(), height=h, width=w, channels=c, m_tilde=mt,
                label=label, n_tokens=n_tok, payload_bytes=n_pay, payload_crc=crc,
                payload_offset=end + 4)


def decompress(data: bytes, model=None, n_bytes: int | None = None,
               return_tokens: bool = False):
    """The image (uint8) of a ``.wvc`` file; with ``n_bytes``, of the first ``n_bytes`` of its
    payload only (a coarser image: a prefix of the tokens, see the module docstring).

    ``model``: the model it was coded with (default: load the zoo model named in the file).
    With ``return_tokens``, returns the :class:`CodedImage` decoded instead of the image.
    """
    import constriction

    hd = read_header(data)
    payload = data[hd["payload_offset"]:]
    if len(payload) != hd["payload_bytes"]:
        raise FileFormatError(f"truncated .wvc payload: {len(payload)} of "
                              f"{hd['payload_bytes']} bytes (decode a prefix with n_bytes / "
                              f"--bytes on the whole file)")
    if zlib.crc32(payload) != hd["payload_crc"]:
        raise FileFormatError(".wvc payload is corrupted (CRC mismatch)")
    need = f"{hd['model']!r}" if hd["model"] else "an unnamed model"
    if model is None:
        if not hd["model"]:
            raise ModelMismatchError("this file was coded with a model loaded from a folder: "
                                     "pass that model (--model PATH)")
        from wavar.model.transformer import WaveletGPT

        model = WaveletGPT.from_pretrained(hd["model"])
    codec = _check_model(model)
    if weights_hash(model) != hd["weights"]:
        raise ModelMismatchError(f"this file needs model {need} with weights "
                                 f"{hd['weights']}; the given model's weights are "
                                 f"{weights_hash(model)}")
    header = codec.header(hd["height"], hd["width"], hd["channels"], hd["m_tilde"])
    words = np.frombuffer(payload[: len(payload) // 4 * 4], "<u4").astype(np.uint32)
    avail = len(words) if n_bytes is None else min(len(words), max(int(n_bytes), 0) // 4)
    # zeros past the kept words: the decoder reads ahead; tokens it decodes from them are
    # dropped by the w_t + 1 <= W rule below
    padded = np.concatenate([words[:avail], np.zeros(8, np.uint32)])
    dec = constriction.stream.queue.RangeDecoder(padded)
    shadow = constriction.stream.queue.RangeEncoder()  # re-encodes to know w_t
    truncated = avail < len(words)

    def choose(t, ids, freqs, probs):
        if freqs is None:
            return int(ids[0]) if not truncated or shadow.num_words() + 1 <= avail else None
        model_t = _categorical(freqs)
        j = int(dec.decode(model_t))
        shadow.encode(np.array([j], np.int32), model_t)
        if truncated and shadow.num_words() + 1 > avail:
            return None
        return int(ids[j])

    toks = _token_models(model, codec, header, hd["label"], hd["n_tokens"], choose)
    if not truncated and len(toks) != hd["n_tokens"]:
        raise FileFormatError(f"decoded {len(toks)} tokens, the header says {hd['n_tokens']}")
    seq = CodedImage(toks, header)
    return seq if return_tokens else codec.decode(seq)
