"""Run under NUMBA_ENABLE_CUDASIM=1 (numba's CUDA simulator) by test_gpu_grammar.py.

Checks the GPU grammar kernel (grammar.py's own functions compiled for CUDA) against the CPU
stepping, and the GPU sampling loop against the CPU one, on the CPU.
"""

import sys
from importlib.util import find_spec

import numpy as np
import torch

from tests.sample.test_generate import tiny_model
from wavar.codec import BatchScanState, WaveletCodec
from wavar.sample import gpu_grammar
from wavar.sample.generate import codec_of, generate


def kernel_matches_cpu_stepping(language: str) -> None:
    codec = WaveletCodec("haar", language=language)
    rng = np.random.default_rng(0)
    m_tilde = np.array([3, 4, 5, 3, 5])
    b = len(m_tilde)
    ref = BatchScanState(codec, 8, 8, 1, m_tilde)
    mems, geo = ref.mems.copy(), ref.geo
    toks = np.full(b, -1, np.int64)
    legal, slots = np.zeros(b, np.int64), np.zeros((b, 5), np.int64)
    pos, live, status = np.zeros((b, 2), np.float32), np.ones(b, bool), np.zeros(1, np.int32)
    args = (mems, toks, codec.lang.to_symbols().astype(np.int64), geo.scan_index, geo.parent,
            geo.children, geo.n_desc, geo.is_ll, geo.block_slot, geo.quad_slot, geo.coef_slot,
            99, 10**6, legal, slots, pos, live, status)
    kernel = gpu_grammar.step_kernel()[1, b]
    kernel(*args)
    steps = 0
    while live.any():
        want, (si, sp) = ref.legal(), ref.slots()
        assert (legal[live] == want[live]).all()
        assert (slots[live] == si[live]).all() and np.allclose(pos[live], sp[live])
        for i in range(b):
            ok = [v for v in range(codec.lang.vocab_size) if (want[i] >> v) & 1]
            toks[i] = rng.choice(ok) if live[i] else -1
        ref.push(toks)
        kernel(*args)
        assert status[0] == 0 and (mems == ref.mems).all()
        steps += 1
    assert ref.done.all() and steps > 100


def loops_agree() -> None:
    model = tiny_model("zeroblock", (8, 8))
    codec = codec_of(model)
    labels = [0, 1, 2, 1]
    fused = ("fused",) if find_spec("triton") else ()  # the fused step in Triton's interpreter
    # before any row finishes, both loops see the same logits and draw the same tokens
    for cfg in (1.0, 2.0):
        a = generate(model, labels, seed=3, cfg=cfg, max_tokens=40, gpu_grammar=True)
        b = generate(model, labels, seed=3, cfg=cfg, max_tokens=40, gpu_grammar=False)
        assert [s.tokens.tolist() for s in a] == [s.tokens.tolist() for s in b]
        # the other capture mode runs the same step (fused: the model step apart from the
        # draw kernel with "model"); "off" only skips graph capture, which the simulator's
        # CPU tensors never do, so here it would run "model"'s very code again
        for mode, attention in (("model", "auto"), *(("model", f) for f in fused)):
            c = generate(model, labels, seed=3, cfg=cfg, max_tokens=40, gpu_grammar=True,
                         cuda_graphs=mode, attention=attention)
            assert [s.tokens.tolist() for s in a] == [s.tokens.tolist() for s in c]
        # per-row cache positions (with the rest of the step fused, at cfg 1 the draw too), or
        # one shared span
        for attention in ("rows", "span", *fused):
            c = generate(model, labels, seed=3, cfg=cfg, max_tokens=40, gpu_grammar=True,
                         attention=attention)
            assert [s.tokens.tolist() for s in a] == [s.tokens.tolist() for s in c]
    # complete runs: legal, complete, decodable; a forced prefix is kept exactly
    real = codec.encode((np.arange(64).reshape(8, 8) * 3).astype(np.uint8))
    for attention in ("auto", *fused):
        seqs = generate(model, labels, seed=4, prefix=[real.tokens[:30]] * 4, gpu_grammar=True,
                        m_tilde=[real.header.m_tilde] * 4, attention=attention)
        for s in seqs:
            assert codec.slots(s).kind[-1] == 4  # replays the grammar: raises if illegal
            assert (s.tokens[:30] == real.tokens[:30]).all()
            assert codec.decode(s).shape == (8, 8)
    budget = generate(model, labels, seed=5, max_plane=1, gpu_grammar=True)
    assert all((codec.slots(s).plane[:-1] < 1).all() for s in budget)
    # rows finishing at different steps: with per-row positions they are skipped, not
    # compacted away; every sequence is still complete, legal and decodable
    rows = generate(model, labels, seed=6, gpu_grammar=True, attention="rows")
    for s in rows:
        assert codec.slots(s).kind[-1] == 4
        assert codec.decode(s).shape == (8, 8)
    assert len({len(s) for s in rows}) > 1  # the rows did finish at different steps


if __name__ == "__main__":
    torch.set_num_threads(1)
    {"kernel": lambda: [kernel_matches_cpu_stepping(x) for x in ("zeroblock", "zerotree")],
     "loops": loops_agree}[sys.argv[1]]()
    print("ok")
