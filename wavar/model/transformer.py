"""WaveletGPT: a decoder-only transformer that speaks the wavelet language.

Read top to bottom: building blocks, the slot embedding, the model (training forward, exact code
length, KV-cache inference, save/load), size presets.

Sequence layout. A sequence of T tokens takes T + 1 positions::

    position   0                 1              2              ...  T
    input      class + m~        step 0         step 1              step T-1
    predicts   (nothing)         token 0        token 1             token T-1

    step t = emb(token t-1, or BOS at t = 0) + emb(slot of token t) + emb(m~)

The condition (class label, with a null label for classifier-free guidance, and m~) is a prefix
*position* rather than something added to step 0: the KV cache then holds it, classifier-free
guidance is just a batch whose prefixes differ, and no later token has to share its embedding with
the condition. Adaptive norm is left out: one prefix is enough at this scale (DiT's adaLN matters
for diffusion, where every step needs the condition equally).

The slot of token t (bit-plane, channel, level, orientation, node kind, the plane's absolute
exponent and the (y, x) centre of its support) is known from the grammar before the token is
chosen, so it is input at the step that predicts token t. The output is masked by the grammar:
illegal tokens get -inf, so the loss is the exact code length of a legal sequence.

Choices: pre-norm RMSNorm, GELU MLP (nanoGPT), no biases, rotary positions for the place in the
sequence. The output head is *not* tied to the token embedding: with 7 tokens tying saves ~0.01%
of the weights, and the input table (which also holds BOS) is summed with eight slot embeddings,
so its geometry has no reason to match the output's.
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from wavar.atomic import write_atomic
from wavar.codec.grammar import CONTEXT_SIZES, CONTEXT_VERSION
from wavar.errors import CheckpointError
from wavar.model import kernels, weights
from wavar.model.config import ModelConfig
from wavar.model.kernels import in_window

__all__ = ["KVCache", "ModelConfig", "PRESETS", "WaveletGPT", "config_from_preset",
           "loss_bits", "mask_logits", "token_bits"]

LN2 = math.log(2.0)
# Init std of the Fourier frequencies, in cycles per image side: the finest 32 x 32 subband puts
# slot centres 1/16 apart, so frequencies up to ~16 must be within reach (Tancik et al. 2020).
FOURIER_SIGMA = 8.0


# ----------------------------------------------------------------------------- building blocks

def rope_tables(n_pos: int, head_dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """cos and sin tables, each (n_pos, head_dim // 2), of rotary embeddings (Su et al. 2021)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angle = torch.outer(torch.arange(n_pos, dtype=torch.float64), inv_freq)
    return angle.cos().float(), angle.sin().float()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x (..., hd) by position; cos, sin (..., hd // 2) broadcast against x's leading
    dimensions. Half-split layout."""
    x1, x2 = x.float().chunk(2, dim=-1)
    cos, sin = cos.float(), sin.float()  # buffers may have been cast by model.to(bf16)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


def window_mask(n: int, window: int, device: torch.device | str) -> Tensor:
    """Dense boolean attention mask (n, n) of one sequence of n positions, prefix at 0."""
    i = torch.arange(n, device=device)
    return in_window(i[:, None], i[None, :], window, i[None, :] == 0)


def sequence_starts(doc: Tensor) -> Tensor:
    """Each position's sequence start (B, P) int32 in packed rows (``doc`` (B, P), -1 for
    padding): the position of its sequence's class prefix; padding gets its own position."""
    B, P = doc.shape
    i = torch.arange(P, device=doc.device).expand(B, P)
    starts = torch.ones_like(doc, dtype=torch.bool)
    starts[:, 1:] = doc[:, 1:] != doc[:, :-1]
    first = torch.where(starts, i, 0).cummax(1).values
    return torch.where(doc >= 0, first, i).to(torch.int32).contiguous()


def sequence_mask(doc: Tensor, flex: bool | None = None, window: int = 0) -> Tensor | BlockMask:
    """Attention of packed rows (:mod:`wavar.train.packing`): a position sees the positions of
    its own sequence (``doc`` (B, P), -1 for padding) up to itself; with a ``window`` only the
    last ``window`` of them and its sequence's class prefix (its first position). Padding sees
    only itself: its output is never read, and a row of padding (rows come in even numbers on
    CUDA) attending causally cost more than a row of sequences. A dense boolean mask (B, 1, P,
    P) on the CPU; on CUDA a FlexAttention block mask, which skips the blocks that no position
    sees (dense, 16 rows of 8,192 would take a gigabyte). ``flex`` chooses the kind (default:
    by the device).

    Both read one table, each query's sequence start ``s``: a key is seen iff ``s <= k`` and
    ``in_window(q, k, window, k == s)``. FlexAttention evaluates the mask function in every
    block the window or a sequence edge cuts, and its forward pays for each lookup there: with
    the query's and the key's sequence and the key's prefix flag looked up, the windowed forward
    took 38.2 ms a layer against full attention's 12.6; with this one lookup 2.3 against 7.0
    (BENCHMARKS.md, "The window trained in")."""
    B, P = doc.shape
    start = sequence_starts(doc)
    i = torch.arange(P, device=doc.device)
    if doc.is_cuda if flex is None else flex:
        def same_sequence(b, h, q, k):
            s = start[b, q]
            return (k >= s) & in_window(q, k, window, k == s)

        if P % FLEX_BLOCK:  # rows not in whole blocks: let FlexAttention work the blocks out
            return create_block_mask(same_sequence, B, None, P, P, device=doc.device)
        prefix = (start == i) & (doc >= 0) if window else None  # each sequence's first
        return _packed_block_mask(doc, same_sequence, window, prefix)
    s, k = start[:, :, None], i[None, None, :]
    return ((k >= s) & in_window(i[None, :, None], k, window, k == s))[:, None]


FLEX_BLOCK = 128  # FlexAttention's default block size


def _flex(q: Tensor, k: Tensor, v: Tensor, block_mask: BlockMask) -> Tensor:
    """FlexAttention over packed rows: traced with the block that calls it when that block is
    compiled (training), else through a compiled kernel of its own (an EMA copy's validation,
    `wavar eval --nll` on CUDA): eager FlexAttention computes every score of the row."""
    if torch.compiler.is_compiling():
        return flex_attention(q, k, v, block_mask=block_mask)
    return _compiled_flex()(q, k, v, block_mask=block_mask)


@functools.cache
def _compiled_flex():
    # static shapes: inductor's dynamic-shape FlexAttention failed to build on the CPU here
    # (torch 2.13); packed rows come in few row counts (row_multiple)
    return torch.compile(flex_attention, dynamic=False)


def _packed_block_mask(doc: Tensor, mask_mod, window: int = 0,
                       prefix: Tensor | None = None) -> BlockMask:
    """The block mask of packed rows, built from the rows' layout in a few small tensor ops.

    ``create_block_mask`` would evaluate ``mask_mod`` at every (row, query, key), a billion
    points for 16 rows of 8,192, at every step. Packing lays each sequence out contiguously and
    padding only at a row's end, so the runs of equal ``doc`` along a row, numbered in order,
    give each block of 128 positions a range of run numbers; a (query block, key block) pair
    holds a visible position iff the ranges meet and the key block is not later, and is fully
    visible iff both blocks lie in one run and the key block is earlier (no causal cut). A
    query block of padding only lists its own block.
    With a ``window`` a pair must also come within ``window`` positions somewhere, or the key
    block hold the prefix (``prefix`` (B, P)) of a sequence the query block holds; it is fully
    visible only if all its pairs lie within the window."""
    B, P = doc.shape
    if window and prefix is None:
        raise ValueError("a windowed block mask needs the rows' prefix positions")
    n = P // FLEX_BLOCK
    starts = torch.ones_like(doc, dtype=torch.bool)
    starts[:, 1:] = doc[:, 1:] != doc[:, :-1]
    run = starts.cumsum(1, dtype=torch.int32).view(B, n, FLEX_BLOCK)
    lo, hi = run[..., 0], run[..., -1]  # (B, n): runs are numbered in order along a row
    blocks = torch.arange(n, device=doc.device)
    qb, kb = blocks[None, :, None], blocks[None, None, :]
    meet = (lo[:, None, :] <= hi[:, :, None]) & (hi[:, None, :] >= lo[:, :, None]) & (qb >= kb)
    single = lo == hi
    full = (single[:, :, None] & single[:, None, :] & (lo[:, :, None] == lo[:, None, :])
            & (qb > kb))
    blank = (doc.view(B, n, FLEX_BLOCK) < 0).all(-1)[:, :, None]  # padding only: sees itself
    meet = meet & (~blank | (qb == kb))
    full = full & ~blank
    if window:
        # nearest pair: the query block's first position, the key block's last
        near = (qb - kb) * FLEX_BLOCK - (FLEX_BLOCK - 1) < window
        pre = prefix.view(B, n, FLEX_BLOCK)
        first = torch.where(pre, run, P + 1).amin(-1)  # run numbers of the block's prefixes
        last = torch.where(pre, run, -1).amax(-1)
        sink = (first[:, None, :] <= hi[:, :, None]) & (last[:, None, :] >= lo[:, :, None])
        meet = meet & (near | sink)
        full = full & ((qb - kb) * FLEX_BLOCK + (FLEX_BLOCK - 1) < window)  # farthest pair
    partial = meet & ~full

    def as_kv_blocks(pairs: Tensor) -> tuple[Tensor, Tensor]:  # (B, 1, n) counts, (B, 1, n, n)
        order = torch.argsort(pairs.to(torch.int8), dim=-1, descending=True, stable=True)
        return (pairs.sum(-1, dtype=torch.int32)[:, None],
                order.to(torch.int32)[:, None].contiguous())

    return BlockMask.from_kv_blocks(*as_kv_blocks(partial), *as_kv_blocks(full),
                                    BLOCK_SIZE=FLEX_BLOCK, mask_mod=mask_mod, seq_lengths=(P, P))


@torch.library.custom_op("wavar::cached_attention", mutates_args=("k_all", "v_all"))
def cached_attention(q: Tensor, k: Tensor, v: Tensor, k_all: Tensor, v_all: Tensor, layer: int,
                     positions: Tensor, window: int = 0) -> Tensor:
    """Write k, v (B, Hkv, T, hd) into layer ``layer`` of the static cache (n_layer, B, Hkv, L,
    hd) at ``positions`` (T,), then attend from q (B, H, T, hd) over all L cached positions
    through a mask (the last ``window`` and the prefix with a window), so shapes never change
    (CUDA graphs). A custom op: torch.compile fuses the
    code around it and leaves the in-place cache write to it rather than copying the cache
    (and it takes the whole cache, not a layer's view: inductor 2.13 lost the view's offset).
    """
    B, H, T, hd = q.shape
    k_cache, v_cache = k_all[layer], v_all[layer]
    n_kv = k_cache.size(1)
    k_cache.index_copy_(2, positions, k.to(k_cache.dtype))
    v_cache.index_copy_(2, positions, v.to(v_cache.dtype))
    at = torch.arange(k_cache.size(2), device=q.device)
    seen = in_window(positions[:, None], at, window, at == 0)  # (T, L)
    if T == 1:
        # One query per sequence (a decode step): group the query heads of each KV head so
        # every cached key and value is read once, GQA or not.
        qg = (q * hd**-0.5).reshape(B, n_kv, H // n_kv, hd).to(k_cache.dtype)
        att = (qg @ k_cache.transpose(-1, -2)).masked_fill(~seen, float("-inf")).softmax(-1)
        return (att @ v_cache).reshape(B, H, 1, hd).to(q.dtype)
    # Several queries (a prefill, run eagerly): attend over the filled part only. With GQA the
    # masked kernel expands keys and values to every head: over a whole 5k-position cache for
    # 5,000 rows (CFG at batch 2,500) that asked for 31 GB.
    n = int(positions[-1]) + 1
    return F.scaled_dot_product_attention(q.to(k_cache.dtype), k_cache[:, :, :n],
                                          v_cache[:, :, :n], attn_mask=seen[:, :n],
                                          enable_gqa=n_kv != H).to(q.dtype)


@cached_attention.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, k_all: Tensor, v_all: Tensor, layer: int,
      positions: Tensor, window: int = 0) -> Tensor:
    return torch.empty_like(q)


@torch.library.custom_op("wavar::row_attention", mutates_args=("k_all", "v_all"))
def row_attention(q: Tensor, k: Tensor, v: Tensor, k_all: Tensor, v_all: Tensor, layer: int,
                  positions: Tensor, window: int = 0) -> Tensor:
    """A decode step whose rows sit at their own cache positions (B,): row r writes k, v
    (B, Hkv, hd) at positions[r] of layer ``layer`` and attends from q (B, H, hd) over its
    positions 0..positions[r] (with a ``window``: the last ``window`` of them and 0); a
    negative position skips the row. Each row reads only its own prefix, and the shapes never
    change (one CUDA graph for a whole generation). On a GPU with Triton this is one
    flash-decoding kernel (:mod:`wavar.model.kernels`) where its tiles fit the head size; the
    PyTorch reference serves the rest."""
    attend = (kernels.decode_attention_triton if kernels.use_attention_kernel(q)
              else kernels.decode_attention_reference)
    return attend(q, k, v, k_all[layer], v_all[layer], positions, window=window)


@row_attention.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, k_all: Tensor, v_all: Tensor, layer: int,
      positions: Tensor, window: int = 0) -> Tensor:
    return torch.empty_like(q)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv, self.dropout = cfg.n_head, cfg.n_kv_head, cfg.dropout
        self.window = cfg.attn_window
        self.hd = cfg.n_embd // cfg.n_head
        # Grouped-query attention: fewer key/value heads shrink the KV cache, which is what
        # sampling reads at every step (the bandwidth that bounds generation speed).
        self.qkv = nn.Linear(cfg.n_embd, (cfg.n_head + 2 * cfg.n_kv_head) * self.hd, bias=False)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, cos: Tensor | None, sin: Tensor | None,
                kv: tuple[Tensor, Tensor, int] | None, positions: Tensor,
                mask: Tensor | BlockMask | None = None) -> Tensor:
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, self.n_head + 2 * self.n_kv, self.hd)
        qk = qkv[:, :, : self.n_head + self.n_kv]
        if cos is not None:  # queries and keys rotated together: one set of kernels
            qk = apply_rope(qk, cos, sin)
        if kv is not None and positions.dim() == 2:  # a decode step, each row at its own
            # position (B, 1)
            y = row_attention(qk[:, 0, : self.n_head], qk[:, 0, self.n_head :],
                              qkv[:, 0, self.n_head + self.n_kv :], kv[0], kv[1], kv[2],
                              positions[:, 0], self.window)  # (B, H, hd)
            return self.resid_drop(self.proj(y.reshape(B, T, C)))
        q = qk[:, :, : self.n_head].transpose(1, 2)  # (B, H, T, hd)
        k = qk[:, :, self.n_head :].transpose(1, 2)  # (B, Hkv, T, hd)
        v = qkv[:, :, self.n_head + self.n_kv :].transpose(1, 2)
        if kv is None:
            p = self.dropout if self.training else 0.0
            if self.n_kv != self.n_head:  # shared KV heads, expanded: the fused kernels take no
                # GQA in every dtype, and the fallback materialises T x T scores (100 GB at 17k
                # fp32 tokens)
                k = k.repeat_interleave(self.n_head // self.n_kv, dim=1)
                v = v.repeat_interleave(self.n_head // self.n_kv, dim=1)
            if mask is None:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
            elif isinstance(mask, Tensor):  # a dense mask: packed rows on the CPU, a window
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
            else:  # packed rows on CUDA: FlexAttention skips the blocks no position sees;
                # it drops no attention weights, so dropout acts on the residual branches and
                # embeddings only (the training loop says so)
                y = _flex(q, k, v, mask)
        else:
            y = cached_attention(q, k, v, kv[0], kv[1], kv[2], positions, self.window)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=False)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm1, self.attn = nn.RMSNorm(cfg.n_embd), CausalSelfAttention(cfg)
        self.norm2, self.mlp = nn.RMSNorm(cfg.n_embd), MLP(cfg)

    def forward(self, x: Tensor, cos: Tensor | None, sin: Tensor | None,
                kv: tuple[Tensor, Tensor, int] | None, positions: Tensor,
                mask: Tensor | BlockMask | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x), cos, sin, kv, positions, mask)
        return x + self.mlp(self.norm2(x))


class SlotEmbedding(nn.Module):
    """Embedding of the slot a token fills: where it sits in the scan and in the image."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.n_embd
        self.plane = nn.Embedding(cfg.n_planes_max, d)
        self.channel = nn.Embedding(cfg.n_channels, d)
        self.level = nn.Embedding(cfg.max_level + 1, d)
        self.orient = nn.Embedding(4, d)  # LL, HL, LH, HH
        self.kind = nn.Embedding(cfg.n_kinds, d)
        # The plane's absolute exponent log2(T) = m~ - 1 - plane says how large a coefficient
        # the slot decides about, which the relative plane index alone does not.
        self.e_min = cfg.m_tilde_min - cfg.n_planes_max
        self.exponent = nn.Embedding(cfg.m_tilde_max - cfg.m_tilde_min + cfg.n_planes_max, d)
        # Learned Fourier features of the (y, x) centre: slots of all levels share one map, so
        # a coarse coefficient and the fine ones under it land close together.
        self.freqs = nn.Parameter(torch.randn(2, cfg.fourier_features) * FOURIER_SIGMA)
        self.fourier = nn.Linear(2 * cfg.fourier_features, d, bias=False)

    def forward(self, slots: Tensor, pos: Tensor, m_tilde: Tensor) -> Tensor:
        # slots (B, T, 5) = [plane, channel, level, orientation, kind]; pos (B, T, 2); m_tilde
        # (B,), or (B, T) in packed rows
        plane, channel, level, orient, kind = slots.unbind(-1)
        m_tilde = m_tilde[:, None] if m_tilde.dim() == 1 else m_tilde
        e = (m_tilde - 1 - plane - self.e_min).clamp(0, self.exponent.num_embeddings - 1)
        angle = 2 * math.pi * (pos.float() @ self.freqs.float())  # (B, T, F), fp32 phases
        feats = torch.cat([angle.sin(), angle.cos()], dim=-1).to(self.fourier.weight.dtype)
        fourier = self.fourier(feats)
        return (self.plane(plane) + self.channel(channel) + self.level(level)
                + self.orient(orient) + self.kind(kind) + self.exponent(e) + fourier)


class ContextEmbedding(nn.Module):
    """Embedding of the decoder-state features (:func:`wavar.codec.grammar.context_of`): what
    a decoder that has read the tokens so far knows about the slot (neighbours' significance,
    the parent's magnitude, the coefficient's own refined value, ...). Without them the model
    must find those tokens among thousands by position alone (docs/design.md §2). One table holds
    every feature's values, each at its own offset; a step sums its features' rows."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.decoder_state != CONTEXT_VERSION:
            raise ValueError(f"decoder_state={cfg.decoder_state}: this version of wavar "
                             f"computes feature set {CONTEXT_VERSION} (0 = none)")
        self.table = nn.Embedding(sum(CONTEXT_SIZES), cfg.n_embd)
        offsets = torch.tensor((0, *CONTEXT_SIZES[:-1])).cumsum(0)
        self.register_buffer("offsets", offsets, persistent=False)

    def forward(self, context: Tensor) -> Tensor:
        # context (B, T, N_CONTEXT) small ints  ->  (B, T, C): a multi-hot row per step times
        # the table. A matmul both ways; embedding_bag's backward piles ~10^6 atomic adds per
        # batch onto the table's few dozen rows.
        idx = (context.long() + self.offsets).reshape(-1, len(CONTEXT_SIZES))
        w = self.table.weight
        hot = torch.zeros(idx.size(0), w.size(0), dtype=w.dtype, device=w.device)
        hot.scatter_(1, idx, 1.0)  # the features' ranges are disjoint: one 1 per feature
        return (hot @ w).view(*context.shape[:-1], -1)


# ----------------------------------------------------------------------------- grammar & bits

def mask_logits(logits: Tensor, legal: Tensor, valid: Tensor | None = None) -> Tensor:
    """Give illegal tokens -inf. ``legal`` (B, T) is an int64 bitmask: bit v set = token v legal.

    Bits past 63 read as the sign bit (two's complement), so -1 means "every token legal" for any
    vocabulary (the raster language's 256 tokens). Padding (``valid`` False) is left unmasked so
    its softmax stays defined.
    """
    bits = torch.arange(logits.size(-1), device=logits.device).clamp(max=63)
    ok = ((legal[..., None] >> bits) & 1).bool()  # (B, T, V)
    if valid is not None:
        ok = ok | ~valid[..., None]
    return logits.masked_fill(~ok, float("-inf"))


def token_bits(logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
    """-log2 p(target) per position (B, T) under the softmax of ``logits``; 0 at padding."""
    logp = F.log_softmax(logits.float(), dim=-1)
    nll = -logp.gather(-1, batch["tokens"][..., None]).squeeze(-1) / LN2
    return torch.where(batch["valid"], nll, torch.zeros_like(nll))


def loss_bits(logits: Tensor, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """(total bits, number of tokens) over the valid positions of a batch.

    With grammar-masked ``logits`` the total is the exact code length of the (legal) sequences.
    """
    return token_bits(logits, batch).sum(), batch["valid"].sum()


# ----------------------------------------------------------------------------- the model

@dataclass
class KVCache:
    """Static key/value buffers, each (n_layer, B, n_head, max_len + 1, head_dim).

    Position 0 holds the class prefix, position t + 1 the step that predicts token t.
    """

    k: Tensor
    v: Tensor

    @property
    def max_len(self) -> int:
        """Most tokens a sequence in this cache can hold."""
        return self.k.size(3) - 1


class WaveletGPT(nn.Module):
    """Decoder-only transformer over wavelet-language token sequences, class-conditioned."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = c = config
        self.tok = nn.Embedding(c.vocab_size + 1, c.n_embd)  # row vocab_size = BOS
        self.slot = SlotEmbedding(c)
        self.context = ContextEmbedding(c) if c.decoder_state else None
        self.m_tilde = nn.Embedding(c.m_tilde_max - c.m_tilde_min + 1, c.n_embd)
        self.cls = nn.Embedding(c.num_classes + 1, c.n_embd)  # row num_classes = null label
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.norm = nn.RMSNorm(c.n_embd)
        self.head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        if c.rope:
            cos, sin = rope_tables(c.max_seq_len + 1, c.n_embd // c.n_head)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual branches by depth
            if name.endswith("attn.proj.weight") or name.endswith("mlp.proj.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * c.n_layer))
        # A zero head starts at the uniform law over the legal tokens: the loss starts at the
        # grammar's own code length instead of at noise.
        nn.init.zeros_(self.head.weight)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    # -- pieces shared by training and inference

    def _clamp(self, m_tilde: Tensor) -> Tensor:
        # Images beyond the table's m~ range (rare extremes) share its edge embedding.
        return m_tilde.clamp(self.config.m_tilde_min, self.config.m_tilde_max)

    def _prefix(self, labels: Tensor, m_tilde: Tensor) -> Tensor:
        # (B,) -> (B, 1, C); per position of packed rows (B, T) -> (B, T, C)
        x = self.cls(labels) + self.m_tilde(self._clamp(m_tilde) - self.config.m_tilde_min)
        return x[:, None] if labels.dim() == 1 else x

    def _steps(self, prev: Tensor, slots: Tensor, pos: Tensor, m_tilde: Tensor,
               context: Tensor | None = None) -> Tensor:
        # prev (B, T) token t-1; slots (B, T, 5), pos (B, T, 2), context (B, T, N_CONTEXT) of
        # token t  ->  (B, T, C)
        m_tilde = self._clamp(m_tilde)  # (B,), or (B, T) in packed rows
        m = self.m_tilde(m_tilde - self.config.m_tilde_min)
        m = m[:, None] if m_tilde.dim() == 1 else m
        x = self.tok(prev) + self.slot(slots, pos, m_tilde) + m
        if self.context is not None:
            if context is None:
                raise ValueError("this model reads decoder-state features (decoder_state="
                                 f"{self.config.decoder_state}): pass the grammar's context")
            x = x + self.context(context)
        return x

    def _trunk(self, x: Tensor, positions: Tensor, cache: KVCache | None = None,
               mask: Tensor | BlockMask | None = None) -> Tensor:
        # x (B, T, C) at sequence `positions`: (T,) shared by all rows, (B, 1) one per row (a
        # decode step; -1 = skip the row) or (B, T) (packed rows, attending through `mask`)
        # ->  normed hidden states (B, T, C)
        cos = sin = None
        if self.config.rope:  # broadcast against (B, T, heads, hd / 2)
            cos, sin = (table[positions][..., None, :] for table in (self.rope_cos, self.rope_sin))
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            kv = None if cache is None else (cache.k, cache.v, i)  # the layer's part of it
            x = block(x, cos, sin, kv, positions, mask)
        return self.norm(x)

    # -- training

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Logits (B, T, V) of every token given its past, masked by ``batch['legal']``.

        ``batch`` holds torch tensors of the data contract: tokens (B, T), slots (B, T, 5),
        pos (B, T, 2), m_tilde (B,), label (B,), and legal, valid (B, T); with
        ``config.decoder_state`` also context (B, T, N_CONTEXT).
        """
        if "doc" in batch:
            return self._forward_packed(batch)
        tokens, labels, m_tilde = batch["tokens"], batch["label"], batch["m_tilde"]
        B, T = tokens.shape
        if T > self.config.max_seq_len:
            raise ValueError(f"sequence of {T} tokens exceeds max_seq_len "
                             f"{self.config.max_seq_len}")
        if self.training and self.config.class_dropout > 0:  # classifier-free guidance training
            drop = torch.rand(B, device=labels.device) < self.config.class_dropout
            labels = labels.masked_fill(drop, self.config.num_classes)
        bos = tokens.new_full((B, 1), self.config.vocab_size)
        prev = torch.cat([bos, tokens[:, :-1]], dim=1)  # (B, T): the token before each slot
        x = torch.cat([self._prefix(labels, m_tilde),
                       self._steps(prev, batch["slots"], batch["pos"], m_tilde,
                                   batch.get("context"))], dim=1)
        # a window cuts attention through a dense mask (SDPA's memory-efficient kernel takes
        # it; 11k positions: 120 MB of booleans), else the causal kernels
        w = self.config.attn_window
        mask = window_mask(T + 1, w, tokens.device) if w and T + 1 > w else None
        h = self._trunk(x, torch.arange(T + 1, device=tokens.device), mask=mask)
        logits = self.head(h[:, 1:]).float()  # (B, T, V); the prefix predicts nothing
        if "legal" in batch:
            logits = mask_logits(logits, batch["legal"], batch.get("valid"))
        return logits

    def _forward_packed(self, batch: dict[str, Tensor]) -> Tensor:
        """Logits (R, P, V) of packed rows (:mod:`wavar.train.packing`): the same logits as
        unpacked at each token's position, nothing (invalid) at prefixes and padding."""
        tokens, labels, m_tilde, prefix = (batch[k] for k in ("tokens", "label", "m_tilde",
                                                              "prefix"))
        if self.training and self.config.class_dropout > 0:  # per sequence: at its prefix
            drop = torch.rand(labels.shape, device=labels.device) < self.config.class_dropout
            labels = labels.masked_fill(drop, self.config.num_classes)
        prev = torch.cat([tokens[:, :1], tokens[:, :-1]], dim=1)
        after_prefix = torch.cat([prefix[:, :1], prefix[:, :-1]], dim=1)
        prev = prev.masked_fill(after_prefix, self.config.vocab_size)  # a sequence's BOS
        x = torch.where(prefix[..., None], self._prefix(labels, m_tilde),
                        self._steps(prev, batch["slots"], batch["pos"], m_tilde,
                                    batch.get("context")))
        mask = sequence_mask(batch["doc"], window=self.config.attn_window)
        h = self._trunk(x, batch["position"], mask=mask)
        return mask_logits(self.head(h).float(), batch["legal"], batch["valid"])

    def bits_per_sequence(self, batch: dict[str, Tensor]) -> Tensor:
        """Code length in bits of each sequence of ``batch`` under the model: (B,) unpacked;
        of packed rows, each sequence's (summed by ``doc``), in the batch's order."""
        bits = token_bits(self(batch), batch)
        if "doc" not in batch:
            return bits.sum(dim=1)
        doc = batch["doc"]
        seen = doc >= 0
        out = bits.new_zeros(int(doc.max()) + 1)  # packing places every sequence
        return out.index_add_(0, doc[seen], bits[seen])

    # -- inference with a static KV cache

    def new_cache(self, batch_size: int, max_len: int | None = None,
                  device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None) -> KVCache:
        """Zeroed KV buffers for ``batch_size`` sequences of up to ``max_len`` tokens.

        Zeros, not ``empty``: a never-written slot gets attention weight 0, and 0 * NaN = NaN.
        """
        c, p = self.config, next(self.parameters())
        max_len = c.max_seq_len if max_len is None else max_len
        if not 1 <= max_len <= c.max_seq_len:
            raise ValueError(f"max_len={max_len} must lie in [1, max_seq_len={c.max_seq_len}]")
        shape = (c.n_layer, batch_size, c.n_kv_head, max_len + 1, c.n_embd // c.n_head)
        kw = dict(device=device or p.device, dtype=dtype or p.dtype)
        return KVCache(torch.zeros(shape, **kw), torch.zeros(shape, **kw))

    @torch.no_grad()
    def prefill(self, cache: KVCache, labels: Tensor, m_tilde: Tensor, slots: Tensor,
                pos: Tensor, tokens: Tensor | None = None,
                context: Tensor | None = None) -> Tensor:
        """Run the class prefix and P known tokens; return raw logits (B, V) for token P.

        Parameters
        ----------
        cache : KVCache
            From :meth:`new_cache`; overwritten from position 0.
        labels, m_tilde : Tensor
            (B,) class labels (``num_classes`` = null) and initial-threshold exponents.
        slots, pos : Tensor
            (B, P + 1, 5) and (B, P + 1, 2) slots and (y, x) centres of tokens 0..P: the P known
            ones and the next. (B, 5) and (B, 2) are accepted for P = 0.
        tokens : Tensor, optional
            (B, P) forced prefix of known tokens.
        context : Tensor, optional
            (B, P + 1, N_CONTEXT) decoder-state features of tokens 0..P ((B, N_CONTEXT) for
            P = 0); needed by a model with ``config.decoder_state``.
        """
        if slots.dim() == 2:
            slots, pos = slots[:, None], pos[:, None]
            context = None if context is None else context[:, None]
        B, n = slots.shape[:2]
        n_known = 0 if tokens is None else tokens.size(1)
        if n != n_known + 1:
            raise ValueError(f"prefill needs slots for the {n_known} known tokens and the next "
                             f"one ({n_known + 1}), got {n}")
        if n > cache.max_len:
            raise ValueError(f"prefill of {n} tokens exceeds the cache ({cache.max_len})")
        prev = torch.full((B, 1), self.config.vocab_size, dtype=torch.long, device=slots.device)
        if tokens is not None:
            prev = torch.cat([prev, tokens], dim=1)  # (B, P + 1)
        x = torch.cat([self._prefix(labels, m_tilde),
                       self._steps(prev, slots, pos, m_tilde, context)], 1)
        h = self._trunk(x, torch.arange(n + 1, device=x.device), cache)  # (B, P + 2, C)
        return self.head(h[:, -1]).float()

    @torch.no_grad()
    def decode_step(self, cache: KVCache, prev_token: Tensor, slots: Tensor, pos: Tensor,
                    m_tilde: Tensor, t: int | Tensor, context: Tensor | None = None) -> Tensor:
        """Raw logits (B, V) for token ``t`` given token t-1 ``prev_token`` (B,).

        ``slots`` (B, 5) and ``pos`` (B, 2) describe the slot of token t. ``t`` may be a 0-d
        tensor, so a captured CUDA graph can be replayed at every step, or a (B,) tensor: each
        row at its own step, where a negative step skips the row (its cache is untouched, its
        logits are meaningless) and each row reads only its own prefix of the cache.
        ``context`` (B, N_CONTEXT): the slot's decoder-state features (models with
        ``config.decoder_state``).
        """
        if isinstance(t, int) and not 1 <= t < cache.max_len:
            raise ValueError(f"t={t} must lie in [1, {cache.max_len}) for this cache")
        t = torch.as_tensor(t, device=slots.device)
        if t.dim() == 1:  # one step per row: (B, 1) positions after the prefix, -1 = skip
            position = torch.where(t >= 0, t + 1, -1)[:, None]
        else:
            position = (t + 1).reshape(1)
        x = self._steps(prev_token[:, None], slots[:, None], pos[:, None], m_tilde,
                        None if context is None else context[:, None])  # (B, 1, C)
        return self.head(self._trunk(x, position, cache)[:, 0]).float()

    # -- sizes and FLOPs

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count; ``non_embedding`` leaves out lookup tables (they cost no FLOPs)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Embedding))
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward), as nanoGPT's ``estimate_mfu``:
        6 N for the weight matmuls plus 12 n_layer n_embd seq_len for attention (with a
        window, at most ``attn_window`` positions seen)."""
        c = self.config
        if c.attn_window:
            seq_len = min(seq_len, c.attn_window + 1)  # the window and the prefix
        return 6.0 * self.num_params(non_embedding=True) + 12.0 * c.n_layer * c.n_embd * seq_len

    def optim_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups: decay on matrices only (not norms, nor the Fourier frequencies, whose
        decay would pull every position map towards the constant)."""
        decay, no_decay = [], []
        for p in self.parameters():
            if p.requires_grad:
                (decay if p.dim() >= 2 and p is not self.slot.freqs else no_decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay},
                {"params": no_decay, "weight_decay": 0.0}]

    # -- published weights

    def save_pretrained(self, directory: str | os.PathLike, dtype: torch.dtype | None = None,
                        max_shard_mb: float | None = None) -> None:
        """Write the weights and ``config.json`` (incl. the codec) to ``directory``.

        ``dtype`` stores floating-point tensors in that type (the zoo keeps float16: half the
        bytes; :meth:`from_pretrained` casts back to the model's own dtype on load).
        ``max_shard_mb``: weights larger than that go into several safetensors files beside an
        index (Hugging Face's sharded layout, :mod:`wavar.model.weights`), as the zoo needs
        for files kept in git under 20 MB; otherwise one ``model.safetensors``.
        """
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().to(dtype if dtype and v.is_floating_point() else v.dtype)
                   .contiguous() for k, v in self.state_dict().items()}
        weights.save(d, tensors, None if max_shard_mb is None else int(max_shard_mb * 1e6))
        text = json.dumps(self.config.to_dict(), indent=2)
        write_atomic(d / "config.json", lambda f: f.write((text + "\n").encode()))

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike,
                        device: torch.device | str = "cpu") -> WaveletGPT:
        """Load a model saved by :meth:`save_pretrained`, in eval mode.

        ``name_or_path`` is a directory (or one of its files); a string that is no existing
        path is looked up in the model zoo (``wavar.zoo.resolve``).
        """
        path = Path(name_or_path)
        if not path.exists():
            try:
                from wavar.zoo import resolve
            except ImportError as e:
                raise CheckpointError(f"{str(name_or_path)!r} is not an existing path and the "
                                      f"model zoo is unavailable ({e})") from e
            path = Path(resolve(str(name_or_path)))
        if path.is_file():
            path = path.parent
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise CheckpointError(f"{cfg_file} is missing")
        try:
            config = ModelConfig.from_dict(json.loads(cfg_file.read_text()))
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"{cfg_file} is not a valid model config: {e}") from e
        state = weights.load(path)
        model = cls(config)
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise CheckpointError(f"{weights.files(path)[0]} does not fit {cfg_file}: {e}"
                                  ) from e
        return model.to(device).eval()


# ----------------------------------------------------------------------------- presets

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(n_layer=2, n_head=2, n_embd=32, fourier_features=8),  # tests, CPU smoke runs
    "small": dict(n_layer=6, n_head=4, n_embd=256),  # MNIST-scale; head size 64 suits flash
    "medium": dict(n_layer=8, n_head=8, n_embd=512),
    "base": dict(n_layer=12, n_head=12, n_embd=768),  # GPT-2 small width and depth
}


def config_from_preset(name: str, **overrides: Any) -> ModelConfig:
    """The :class:`ModelConfig` of preset ``name``, with ``overrides`` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    return ModelConfig(**{**PRESETS[name], **overrides})
