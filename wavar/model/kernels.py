"""Launchers of the decode-step Triton kernels (:mod:`wavar.model.triton_kernels`) and the
PyTorch reference of the attention; importing this module needs no Triton.

Decode attention with per-row cache lengths. One sampling step of a batch gives every row one
query. Row r writes its new key and value at cache position ``positions[r]`` and attends over
positions ``0 .. positions[r]``; a negative position skips the row (a finished sequence: no
cache write, no reads). Each row therefore reads exactly its own prefix, once, whatever the
other rows' lengths, which is what the bandwidth bound of sampling counts, and the shapes never
change between steps (one CUDA graph serves a whole generation).

The kernel is flash-decoding (Dao et al. 2023): one program per (row, key/value head, chunk of
the prefix), the query heads that share a key/value head processed together on tensor cores
(grouped-query attention reads each cached key once), an online softmax over blocks of
positions, and a second kernel that merges a row's chunks. Chunks have a fixed size, so a long
prefix gets more programs than a short one and a finished row none: rows of unequal lengths
keep the GPU evenly busy. The new key and value take part from registers, so no program reads a
position another may still be writing.

The fused step (:class:`FusedDecodeStep`) runs the rest of a small model's decode step around
that kernel and can draw the tokens in its last kernel (:func:`draw_tokens` draws from logits
made elsewhere): a step of the sampler in ~20 kernels.

``decode_attention_reference`` is the attention in plain PyTorch (any device), and the model's
own ``decode_step`` is the fused step's reference; the tests run the kernels in Triton's
interpreter (``TRITON_INTERPRET=1``) against them.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor


def decode_attention_reference(q: Tensor, k: Tensor, v: Tensor, k_cache: Tensor,
                               v_cache: Tensor, positions: Tensor) -> Tensor:
    """Write k, v (B, Hkv, hd) at ``positions`` (B,) of the caches (B, Hkv, L, hd), then attend
    from q (B, H, hd) over each row's positions 0..positions[r]. Returns (B, H, hd); rows with a
    negative position leave the caches untouched and get zeros."""
    B, H, hd = q.shape
    n_kv, length = k_cache.size(1), k_cache.size(2)
    alive = positions >= 0
    at = positions.clamp(min=0)
    rows = torch.arange(B, device=q.device)
    for cache, new in ((k_cache, k), (v_cache, v)):  # (B, Hkv, hd) entries, kept where dead
        cache[rows, :, at] = torch.where(alive[:, None, None], new.to(cache.dtype),
                                         cache[rows, :, at])
    seen = torch.arange(length, device=q.device)[None, :] <= at[:, None]  # (B, L)
    qg = (q.float() * hd**-0.5).reshape(B, n_kv, H // n_kv, hd)
    att = qg @ k_cache.float().transpose(-1, -2)  # (B, Hkv, G, L)
    att = att.masked_fill(~seen[:, None, None, :], float("-inf")).softmax(-1)
    out = (att @ v_cache.float()).reshape(B, H, hd)
    return out.masked_fill(~alive[:, None, None], 0.0).to(q.dtype)


@functools.cache
def triton_available() -> bool:
    """True when Triton imports and can drive this machine's GPU."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def default_chunk(batch_kv: int, length: int, device: torch.device, block_n: int = 64) -> int:
    """Positions of a prefix per program: enough programs for about eight per multiprocessor
    when every row's prefix is full (a single sequence: chunks of one block), at most 512
    positions, so that rows of unequal lengths still spread evenly. A multiple of ``block_n``."""
    if device.type != "cuda":  # one chunk
        return block_n * -(-length // block_n)
    want = 8 * torch.cuda.get_device_properties(device).multi_processor_count
    blocks = -(-batch_kv * length // (block_n * want))
    return block_n * min(512 // block_n, 1 << max(0, math.ceil(math.log2(max(blocks, 1)))))


def _precision(dtype: torch.dtype, precision: str | None) -> str:
    # Triton's input_precision for fp32 tensor-core products (the tf32 variants are fp32-only)
    if dtype != torch.float32:
        return "ieee"
    if precision is None:
        return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "tf32x3"
    return precision


def decode_attention_triton(q: Tensor, k: Tensor, v: Tensor, k_cache: Tensor, v_cache: Tensor,
                            positions: Tensor, chunk: int | None = None,
                            block_n: int | None = None, dot: bool = True,
                            precision: str | None = None, warps: int | None = None,
                            stages: int | None = None) -> Tensor:
    """:func:`decode_attention_reference` as one Triton kernel (two when prefixes are chunked).

    ``chunk`` (default :func:`default_chunk`; a multiple of the block) is how many cached
    positions one program reads; a row's chunks are merged after. ``dot`` computes the scores
    and the weighted values on tensor cores (the query group padded to 16 rows), fp32 caches at
    ``precision`` (Triton's ``input_precision``: ``"tf32x3"`` keeps about fp32 accuracy,
    ``"ieee"`` is exact fp32 without tensor cores, ``"tf32"`` the fastest and coarsest; by
    default ``"tf32"`` where ``torch.backends.cuda.matmul.allow_tf32`` lets PyTorch's own fp32
    matrix products use TF32, else ``"tf32x3"``). ``block_n``, ``warps`` and ``stages`` are
    the kernel's tiling, for tuning.
    """
    from wavar.model import triton_kernels as tk

    B, H, hd = q.shape
    n_kv, length = k_cache.size(1), k_cache.size(2)
    group = H // n_kv
    if hd & (hd - 1) or hd < 16 or any(x.stride(-1) != 1 for x in (q, k, v, k_cache, v_cache)):
        raise ValueError("decode attention needs a power-of-two head size of at least 16 and "
                         "a contiguous last dimension")
    gp = max(16 if dot else 2, 1 << math.ceil(math.log2(group)))
    # without tensor cores the (GP, BN, HD) products live in registers: keep them near 8k
    block_n = block_n or (64 if dot else max(16, min(64, 8192 // (gp * hd))))
    chunk = chunk or default_chunk(B * n_kv, length, q.device, block_n)
    block_n = min(block_n, chunk)
    if block_n < 16 or block_n & (block_n - 1) or chunk % block_n:
        raise ValueError(f"chunk={chunk} must be a multiple of a power-of-two block of at "
                         f"least 16 positions (block_n={block_n})")
    chunks = -(-length // chunk)
    out = torch.empty(B, H, hd, dtype=q.dtype, device=q.device)
    parts = [torch.empty(B * n_kv * chunks * gp * w, dtype=torch.float32, device=q.device)
             for w in (1, 1, hd)] if chunks > 1 else [out, out, out]
    layout = dict(HKV=n_kv, G=group, GP=gp, HD=hd, CHUNK=chunk, CHUNKS=chunks)
    warps = warps or (4 if dot or gp * hd * block_n <= 8192 else 8)
    tuning = {} if stages is None else {"num_stages": stages}
    tk.attend[(B * n_kv, chunks)](
        q, k, v, k_cache, v_cache, positions, out, *parts,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), out.stride(0), out.stride(1),
        hd**-0.5, BLOCK_N=block_n, DOT=dot, PRECISION=_precision(k_cache.dtype, precision),
        num_warps=warps, **layout, **tuning)
    if chunks > 1:
        tk.merge[(B * n_kv,)](positions, out, *parts, out.stride(0), out.stride(1), num_warps=4,
                              **layout)
    return out


def fused_step_supported(model) -> bool:
    """Whether :class:`FusedDecodeStep` serves this model: a power-of-two head size of at least
    16 (the attention kernel's tiles) and a width of at most 128. Wider models keep a block of
    rows' activations and weight tiles in registers only by spilling (and their steps are
    bound by the cache's bytes, not by kernel launches: per-row attention serves them)."""
    c = model.config
    hd = c.n_embd // c.n_head
    return hd >= 16 and not hd & (hd - 1) and c.n_embd <= 128


class FusedDecodeStep:
    """``model.decode_step`` with per-row steps (``t`` of shape (B,)) in Triton kernels:
    ``step_head`` (embedding, layer 0's q, k, v), then per layer the attention (``attend``, and
    ``merge`` when prefixes are chunked), ``step_mlp`` and ``step_next``
    (:mod:`wavar.model.triton_kernels`); the last ``step_next`` can draw the tokens too
    (see ``__call__``).

    The weights are copied at construction, transposed, in ``weights`` precision (activations
    stay fp32 whatever the model's dtype; the cache keeps its own): build a new one after they
    change. Products run on tensor cores at ``precision`` as in
    :func:`decode_attention_triton` with fp32 weights; with fp16 weights (``weights="fp16"``,
    the default where that precision is ``"tf32"`` and every weight fits fp16) a product
    rounds its activations to fp16 too and sums in fp32: the same 10-bit significands as
    TF32, half the bytes per weight tile, and a narrower exponent range (a risk only for
    activations past 65504).
    ``block_rows`` rows share a program; ``chunk`` is the attention's (default: its own);
    ``mlp_split`` programs share a block's MLP (default: 256 hidden units each); ``tile``
    (weight tiles of ``tile`` columns or rows), ``warps`` and ``stages`` tune the kernels.
    """

    def __init__(self, model, block_rows: int = 16, chunk: int | None = None,
                 precision: str | None = None, tile: int | None = None,
                 mlp_split: int | None = None, warps: int = 4,
                 stages: int | None = None, weights: str | None = None) -> None:
        if not fused_step_supported(model):
            raise ValueError("the fused decode step needs a power-of-two head size >= 16 and "
                             "n_embd <= 128")
        # fp16 keeps the 10 bits of significand TF32 products keep: where those are allowed,
        # half the bytes per weight tile and half the product instructions cost no accuracy
        # (measured on the H200: logits 7.4e-3 from fp32 against TF32 products' 2.2e-2,
        # benchmarks/results/..._fp16default_stepcheck_fp32.json), unless a weight overflows it
        def fits() -> bool:  # (one device read, and only where fp16 is in question)
            largest = torch.stack([p.detach().abs().max().float() for p in model.parameters()])
            return float(largest.max()) <= 65504.0

        if weights is None:
            tf32 = _precision(torch.float32, precision) == "tf32"
            weights = "fp16" if tf32 and fits() else "fp32"
        elif weights not in ("fp32", "fp16"):
            raise ValueError(f"weights must be 'fp32' or 'fp16', got {weights!r}")
        elif weights == "fp16" and not fits():
            raise ValueError("this model has weights beyond fp16's range (65504): "
                             "use weights='fp32'")
        self.weights = weights
        weight_dtype = torch.float16 if weights == "fp16" else torch.float32
        c = self.config = model.config
        C, H, n_kv = c.n_embd, c.n_head, c.n_kv_head
        hd = C // H
        self.block_rows, self.chunk, self.precision = block_rows, chunk, precision

        def packed(w: Tensor) -> Tensor:  # (out, in) -> (in, out), row-major
            return w.detach().float().t().contiguous().to(weight_dtype)

        def halves(w: Tensor, heads: int) -> list[Tensor]:  # each head's first / second half
            w = w.detach().view(heads, 2, hd // 2, C)
            return [packed(w[:, i].reshape(heads * hd // 2, C)) for i in (0, 1)]

        def norm(m) -> Tensor:
            return m.weight.detach().float().contiguous()

        self.eps = model.norm.eps or torch.finfo(torch.float32).eps
        self.layers = []
        for block in model.blocks:
            q, k, v = block.attn.qkv.weight.split([H * hd, n_kv * hd, n_kv * hd])
            self.layers.append(dict(
                qkv=[norm(block.norm1), *halves(q, H), *halves(k, n_kv), packed(v)],
                rest=[packed(block.attn.proj.weight), norm(block.norm2),
                      packed(block.mlp.fc.weight), packed(block.mlp.proj.weight)]))
        s = model.slot
        self.embeddings = [t.detach().float().contiguous() for t in (
            model.tok.weight, s.plane.weight, s.channel.weight, s.level.weight, s.orient.weight,
            s.kind.weight, s.exponent.weight, model.m_tilde.weight, s.freqs,
            s.fourier.weight.t())]
        self.embedding_ranges = (c.m_tilde_min, c.m_tilde_max, s.e_min,
                                 s.exponent.num_embeddings)
        f = c.fourier_features
        self.fourier_sizes = dict(F=f, FP=max(16, 1 << math.ceil(math.log2(f))))
        self.head = [norm(model.norm), packed(model.head.weight)]
        device = model.head.weight.device
        if c.rope:
            self.rope = [model.rope_cos.float().contiguous(), model.rope_sin.float().contiguous()]
        else:  # never read
            self.rope = [torch.zeros(1, device=device)] * 2
        cp = 1 << math.ceil(math.log2(C))
        # weight tiles of ~32 KB, 8k fp32 or 16k fp16 values (fewer, larger tiles make shorter
        # chains of dependent products; fp16 tiles of 128 columns: step_mlp 7.2 us a layer
        # instead of 8.6 at 64, benchmarks/results/..._fp16default_tf32_profile*.txt)
        per_tile = 8192 if weights == "fp32" else 16384
        tile = tile or max(16, min(per_tile // 128, per_tile // cp))
        self.sizes = dict(C=C, CP=cp, H=H, HKV=n_kv, HD=hd, NT=tile, ROPE=c.rope)
        # 256 hidden units a program: at batch 1024 on an H200, 2 programs a block of rows beat
        # 4 by 4.6% and 8 by 11-15% (benchmarks/results/..._fused_tf32_sweep.json)
        self.split = mlp_split or max(1, 4 * C // 256)
        self.mlp_sizes = dict(C=C, CP=cp, HID=4 * C, HS=-(-4 * C // self.split), HT=tile,
                              KT=tile)
        # 4 warps: 4.5% faster whole generations than 8 at batch 1024 (TF32; ..._tilings.json)
        self.tuning = {"num_warps": warps, **({} if stages is None else {"num_stages": stages})}

    @property
    def can_draw(self) -> bool:
        """Whether a step can draw the tokens itself (a row's logits fit one weight tile)."""
        return self.config.vocab_size <= self.sizes["NT"]

    def __call__(self, cache, prev_token: Tensor, slots: Tensor, pos: Tensor, m_tilde: Tensor,
                 t: Tensor, live: Tensor | None = None,
                 draw: Draw | None = None) -> Tensor | None:
        """Raw logits (B, V) as :meth:`WaveletGPT.decode_step` with a (B,) ``t`` (a negative
        ``prev_token`` reads as 0: finished rows need no clamping). ``live`` (B,) bool: rows
        where it is False are skipped as if their ``t`` were negative. ``draw`` (needs
        :attr:`can_draw`): the last kernel draws the tokens instead (as :func:`draw_tokens`,
        each row's step being ``t``, which it advances) and the step returns None."""
        from wavar.model import triton_kernels as tk

        if draw is not None and not self.can_draw:
            raise ValueError("a drawing step needs a vocabulary within one weight tile")

        B = len(prev_token)
        C, H, n_kv, hd = (self.sizes[k] for k in ("C", "H", "HKV", "HD"))
        dev = prev_token.device
        position = torch.empty_like(t)  # t + 1, -1 for skipped rows: step_head writes it
        x, x_mid = torch.empty(B, C, device=dev), torch.empty(B, C, device=dev)
        y_part = torch.empty(self.split, B, C, device=dev)
        q = torch.empty(B, H, hd, device=dev)
        k, v = torch.empty(B, n_kv, hd, device=dev), torch.empty(B, n_kv, hd, device=dev)
        logits = torch.empty(B, self.config.vocab_size, device=dev)
        blocks = -(-B // self.block_rows)
        precision = _precision(torch.float32, self.precision)
        common = dict(BM=self.block_rows, PRECISION=precision, **self.tuning)
        qkv = (*self.rope, q, k, v)
        tk.step_head[(blocks, 3)](prev_token, slots, pos, m_tilde, t,
                                  t if live is None else live, position, x,
                                  *self.embeddings, *self.layers[0]["qkv"], *qkv, B, self.eps,
                                  *self.embedding_ranges, **self.fourier_sizes, **common,
                                  **self.sizes, USE_LIVE=live is not None)
        # the draw's buffers (never read when the step does not draw)
        drawing, force = draw.kernel_args(t) if draw is not None else ([x] * 8 + [1.0, 1, 1],
                                                                      False)
        for i, layer in enumerate(self.layers):
            last = i == len(self.layers) - 1
            att = decode_attention_triton(q, k, v, cache.k[i], cache.v[i], position,
                                          chunk=self.chunk, precision=self.precision)
            tk.step_mlp[(blocks, self.split)](x, att, *layer["rest"], x_mid, y_part, B,
                                              self.eps, **self.mlp_sizes, **common)
            nxt = layer if last else self.layers[i + 1]  # (the last layer's is never read)
            tk.step_next[(blocks, 1 if last else 3)](
                x, position, x_mid, y_part, *nxt["qkv"], *qkv, *self.head, logits, B, self.eps,
                *drawing, S=self.split, VOCAB=self.config.vocab_size, LAST=last,
                DRAW=last and draw is not None, FORCE=force, **common, **self.sizes)
        return logits if draw is None else None


@dataclass
class Draw:
    """The buffers of a plain draw (:func:`draw_tokens`): grammar bitmasks ``legal`` (B,),
    ``noise`` (B, V) ~ Exp(1), ``live`` (B,) bool, the drawn tokens ``tok`` (B,) and the
    record ``out`` (B, max_len) int8; the forced prefix ``forced`` (B, width) of
    ``forced_len`` (B,) tokens per row."""

    legal: Tensor
    noise: Tensor
    live: Tensor
    tok: Tensor
    out: Tensor
    temperature: float = 1.0
    forced: Tensor | None = None
    forced_len: Tensor | None = None

    def kernel_args(self, t: Tensor) -> tuple[list, bool]:
        """The draw kernels' arguments LEGAL .. s_out (T: each row's step t (B,)), and
        FORCE."""
        force = self.forced is not None
        forced, forced_len = (self.forced, self.forced_len) if force else (self.tok, self.tok)
        return [self.legal, self.noise, self.live, forced, forced_len, t, self.tok,
                self.out, 1.0 / self.temperature, forced.stride(0) if force else 1,
                self.out.stride(0)], force


def draw_tokens(logits: Tensor, t: Tensor, draw: Draw) -> None:
    """Plain sampling in one Triton kernel: ``draw.tok`` (B,) and ``draw.out[row, t[row]]``
    get, per row, the argmax over its legal tokens (bitmask ``legal``) of softmax(logits /
    temperature) / noise (the draw of :func:`wavar.sample.filters.sample`), or
    ``forced[row, t]`` while ``t < forced_len[row]``; -1 where ``live`` is False; then each
    row's step ``t`` (B,) advances by one."""
    from wavar.model import triton_kernels as tk

    B, V = logits.shape
    args, force = draw.kernel_args(t)
    block = 128
    tk.draw[(-(-B // block),)](logits, *args, B, V=V,
                               VP=max(16, 1 << math.ceil(math.log2(V))), FORCE=force,
                               BLOCK=block, num_warps=4)
