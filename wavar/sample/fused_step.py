"""The fused decode step: a small model's ``decode_step`` in ~20 Triton kernels, drawing the
tokens in its last one (importing this module needs no Triton).

A sampling device that reads the model's weights: :class:`FusedDecodeStep` copies them once
and runs ``step_head``, then per layer the model's decode attention
(:func:`wavar.model.kernels.decode_attention_triton`), ``step_mlp`` and ``step_next``
(:mod:`wavar.sample.triton_kernels`). The model's own ``decode_step`` is its reference; the
tests run the kernels in Triton's interpreter (``TRITON_INTERPRET=1``) against it.

The tiling is fixed, measured on an H200 at batch 1024 (BENCHMARKS.md, session 5-7; sweeps in
``benchmarks/results/sample_speed_fashion-mnist_h200_fused_tf32_sweep.json`` and
``..._fused_tf32_tilings.json``): 16-row blocks, 4 warps a program (4.5% faster whole
generations than 8), 256 hidden units per MLP program (2 programs a block beat 4 by 4.6%, 8 by
11-15%), weight tiles of ~32 KB; tiles of 32, 2 pipeline stages, 32-row blocks and other prefix
chunks were all within 4%.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from wavar.model.kernels import attention_kernel_limit, decode_attention_triton, input_precision
from wavar.sample.draw import Draw
from wavar.sample.steps import StepInputs

MAX_WIDTH = 128
BLOCK_ROWS = 16
WARPS = 4
HIDDEN_PER_PROGRAM = 256
# weight tiles of ~32 KB: 8k fp32 or 16k fp16 values, so 64 or 128 columns at width <= 128
# (fewer, larger tiles make shorter chains of dependent products; fp16 tiles of 128 columns:
# step_mlp 7.2 us a layer instead of 8.6 at 64, ..._fp16default_tf32_profile*.txt)
TILE = {"fp32": 64, "fp16": 128}
# a row's logits fit one weight tile whatever the weights' precision: the step can draw
DRAW_VOCAB = min(TILE.values())


def fused_step_limit(config) -> str | None:
    """Why :class:`FusedDecodeStep` cannot serve a model of ``config``, or None. Wider models
    than 128 keep a block of rows' activations and weight tiles in registers only by spilling
    (and their steps are bound by the cache's bytes, not by kernel launches)."""
    if config.n_embd > MAX_WIDTH:
        return f"n_embd {config.n_embd} > {MAX_WIDTH}"
    return attention_kernel_limit(config.n_embd // config.n_head)


class FusedDecodeStep:
    """``model.decode_step`` with per-row steps (``t`` of shape (B,)) in Triton kernels; the
    last ``step_next`` can draw the tokens too (see ``__call__``).

    The weights are copied at construction, transposed, in ``weights`` precision (activations
    stay fp32 whatever the model's dtype; the cache keeps its own): build a new one after they
    change. Products run on tensor cores at ``precision`` as in
    :func:`~wavar.model.kernels.decode_attention_triton` with fp32 weights; with fp16 weights
    (``weights="fp16"``, the default where that precision is ``"tf32"`` and every weight fits
    fp16) a product rounds its activations to fp16 too and sums in fp32: the same 10-bit
    significands as TF32, half the bytes per weight tile, and a narrower exponent range (a
    risk only for activations past 65504).
    """

    def __init__(self, model, precision: str | None = None, weights: str | None = None) -> None:
        limit = fused_step_limit(model.config)
        if limit:
            raise ValueError(f"the fused decode step cannot serve this model: {limit}")

        # fp16 keeps the 10 bits of significand TF32 products keep: where those are allowed,
        # half the bytes per weight tile and half the product instructions cost no accuracy
        # (measured on the H200: logits 7.4e-3 from fp32 against TF32 products' 2.2e-2,
        # benchmarks/results/..._fp16default_stepcheck_fp32.json), unless a weight overflows it
        def fits() -> bool:  # (one device read, and only where fp16 is in question)
            largest = torch.stack([p.detach().abs().max().float() for p in model.parameters()])
            return float(largest.max()) <= 65504.0

        if weights is None:
            tf32 = input_precision(torch.float32, precision) == "tf32"
            weights = "fp16" if tf32 and fits() else "fp32"
        elif weights not in ("fp32", "fp16"):
            raise ValueError(f"weights must be 'fp32' or 'fp16', got {weights!r}")
        elif weights == "fp16" and not fits():
            raise ValueError("this model has weights beyond fp16's range (65504): "
                             "use weights='fp32'")
        self.weights, self.precision = weights, precision
        weight_dtype = torch.float16 if weights == "fp16" else torch.float32
        c = self.config = model.config
        C, H, n_kv = c.n_embd, c.n_head, c.n_kv_head
        hd = C // H

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
        device = model.head.weight.device
        # the slot's small-integer fields (StepInputs.slots' columns) share one table, each
        # field's rows from its offset on: step_head sums them in one loop
        fields = [s.plane, s.channel, s.level, s.orient, s.kind]
        rows0 = [0, *itertools.accumulate(f.num_embeddings for f in fields)][:-1]
        self.embeddings = [model.tok.weight.detach().float().contiguous(),
                           torch.cat([f.weight.detach().float() for f in fields]).contiguous(),
                           torch.tensor(rows0, dtype=torch.int64, device=device)]
        self.embeddings += [t.detach().float().contiguous() for t in (
            s.exponent.weight, model.m_tilde.weight, s.freqs, s.fourier.weight.t())]
        # the decoder-state features (StepInputs.context's columns): one table already, each
        # feature's rows from its offset on (never read by a model without them)
        ctx = model.context
        self.embeddings += ([ctx.table.weight.detach().float().contiguous(), ctx.offsets]
                            if ctx is not None else self.embeddings[1:3])
        self.embedding_ranges = (c.m_tilde_min, c.m_tilde_max, s.e_min,
                                 s.exponent.num_embeddings)
        f = c.fourier_features
        self.input_sizes = dict(F=f, FP=max(16, 1 << math.ceil(math.log2(f))),
                                NSLOT=len(fields),
                                NCTX=0 if ctx is None else int(ctx.offsets.numel()))
        self.head = [norm(model.norm), packed(model.head.weight)]
        if c.rope:
            self.rope = [model.rope_cos.float().contiguous(), model.rope_sin.float().contiguous()]
        else:  # never read
            self.rope = [torch.zeros(1, device=device)] * 2
        cp = 1 << math.ceil(math.log2(C))
        tile = TILE[weights]
        self.sizes = dict(C=C, CP=cp, H=H, HKV=n_kv, HD=hd, NT=tile, ROPE=c.rope)
        self.split = max(1, 4 * C // HIDDEN_PER_PROGRAM)
        self.mlp_sizes = dict(C=C, CP=cp, HID=4 * C, HS=-(-4 * C // self.split), HT=tile,
                              KT=tile)

    @property
    def can_draw(self) -> bool:
        """Whether a step can draw the tokens itself (a row's logits fit one weight tile)."""
        return self.config.vocab_size <= self.sizes["NT"]

    def __call__(self, cache, prev_token: Tensor, inputs: StepInputs, m_tilde: Tensor,
                 t: Tensor, live: Tensor | None = None,
                 draw: Draw | None = None) -> Tensor | None:
        """Raw logits (B, V) as :meth:`WaveletGPT.decode_step` with a (B,) ``t`` (a negative
        ``prev_token`` reads as 0: finished rows need no clamping). ``live`` (B,) bool: rows
        where it is False are skipped as if their ``t`` were negative. ``draw`` (needs
        :attr:`can_draw`): the last kernel draws the tokens instead (as
        :func:`~wavar.sample.draw.draw_tokens`, each row's step being ``t``, which it
        advances) and the step returns None."""
        from wavar.sample import triton_kernels as tk

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
        blocks = -(-B // BLOCK_ROWS)
        precision = input_precision(torch.float32, self.precision)
        common = dict(BM=BLOCK_ROWS, PRECISION=precision, num_warps=WARPS)
        qkv = (*self.rope, q, k, v)
        context = inputs.slots if inputs.context is None else inputs.context  # (unread: none)
        tk.step_head[(blocks, 3)](prev_token, inputs.slots, inputs.pos, context, m_tilde, t,
                                  t if live is None else live, position, x,
                                  *self.embeddings, *self.layers[0]["qkv"], *qkv, B, self.eps,
                                  *self.embedding_ranges, **self.input_sizes, **common,
                                  **self.sizes, USE_LIVE=live is not None)
        # the draw's buffers (never read when the step does not draw)
        drawing, force = draw.kernel_args(t) if draw is not None else ([x] * 8 + [1.0, 1, 1],
                                                                      False)
        for i, layer in enumerate(self.layers):
            last = i == len(self.layers) - 1
            att = decode_attention_triton(q, k, v, cache.k[i], cache.v[i], position,
                                          precision=self.precision,
                                          window=self.config.attn_window)
            tk.step_mlp[(blocks, self.split)](x, att, *layer["rest"], x_mid, y_part, B,
                                              self.eps, **self.mlp_sizes, **common)
            nxt = layer if last else self.layers[i + 1]  # (the last layer's is never read)
            tk.step_next[(blocks, 1 if last else 3)](
                x, position, x_mid, y_part, *nxt["qkv"], *qkv, *self.head, logits, B, self.eps,
                *drawing, S=self.split, VOCAB=self.config.vocab_size, LAST=last,
                DRAW=last and draw is not None, FORCE=force, **common, **self.sizes)
        return logits if draw is None else None
