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
from wavar.codec.grammar import N_CONTEXT
from wavar.sample import gpu_grammar
from wavar.sample.generate import codec_of, generate
from wavar.sample.options import SamplingOptions
from wavar.sample.planning import Machine, plan


def kernel_matches_cpu_stepping(language: str, channels: int = 1, context: bool = False,
                                wavelet: str = "haar") -> None:
    """The kernel's masks, slots and states (and, with ``context``, its decoder-state
    features) equal the CPU grammar's at every step of random legal sequences (``wavelet``
    "cdf53": lossless, down to threshold 1)."""
    codec = WaveletCodec(wavelet, language=language)
    rng = np.random.default_rng(0)
    m_tilde = np.array([3, 4, 5, 3, 5])
    b = len(m_tilde)
    ref = BatchScanState(codec, 8, 8, channels, m_tilde)
    mems, geo = ref.mems.copy(), ref.geo
    toks = np.full(b, -1, np.int64)
    legal, slots = np.zeros(b, np.int64), np.zeros((b, 5), np.int64)
    pos, live, status = np.zeros((b, 2), np.float32), np.ones(b, bool), np.zeros(1, np.int32)
    args = (mems, toks, codec.lang.to_symbols().astype(np.int64), geo.scan_index, geo.parent,
            geo.children, geo.n_desc, geo.is_ll, geo.block_slot, geo.quad_slot, geo.coef_slot,
            99, 10**6, legal, slots, pos, live, status)
    features = np.full((b, N_CONTEXT), -1, np.int64)
    if context:
        args += (features, *geo.context_tables)
    kernel = gpu_grammar.step_kernel(context)[1, b]
    kernel(*args)
    steps = 0
    while live.any():
        want, (si, sp) = ref.legal(), ref.slots()
        assert (legal[live] == want[live]).all()
        assert (slots[live] == si[live]).all() and np.allclose(pos[live], sp[live])
        if context:
            assert (features == ref.context()).all()
        for i in range(b):
            ok = [v for v in range(codec.lang.vocab_size) if (want[i] >> v) & 1]
            toks[i] = rng.choice(ok) if live[i] else -1
        ref.push(toks)
        kernel(*args)
        assert status[0] == 0 and (mems == ref.mems).all()
        steps += 1
    assert ref.done.all() and steps > 100


def simulated_plan(model, **settings):
    """The plan a CUDA machine with numba-cuda and Triton would pick, run on the simulator:
    its tensors stay on the CPU, so nothing is captured as a CUDA graph."""
    machine = Machine(cuda=True, numba_cuda=True, triton=True)
    return plan(model, SamplingOptions(**settings), machine).replace(graphs="none")


def loops_agree() -> None:
    model = tiny_model("zeroblock", (8, 8))
    codec = codec_of(model)
    labels = [0, 1, 2, 1]
    # the PyTorch step (its per-row attention the reference on CPU tensors) and, where Triton
    # is installed, the fused step in Triton's interpreter: the plan's own choice here
    model_step = dict(step="model", attention="pytorch", draw="pytorch")
    fused = find_spec("triton") is not None
    # before any row finishes, both loops see the same logits and draw the same tokens
    for settings in ({}, {"cfg": 2.0}, {"temperature": 0.7, "top_p": 0.8},
                     {"temperature": (1.3, 0.5)}, {"cfg": (1.0, 3.0), "temperature": (1, 0.8)}):
        cpu = generate(model, labels, seed=3, max_tokens=40, **settings)
        assert cpu.plan.loop == "cpu"
        chosen = simulated_plan(model, **settings)
        assert chosen.step == "fused" and chosen.draw == ("kernel" if not settings else
                                                          "pytorch")
        for p in [chosen.replace(**model_step)] + [chosen] * fused:
            gpu = generate(model, labels, seed=3, max_tokens=40, plan=p, **settings)
            assert gpu.plan is p
            assert [s.tokens.tolist() for s in gpu] == [s.tokens.tolist() for s in cpu], p
    # complete runs: legal, complete, decodable; a forced prefix is kept exactly
    real = codec.encode((np.arange(64).reshape(8, 8) * 3).astype(np.uint8))
    chosen = simulated_plan(model)
    for p in [chosen.replace(**model_step)] + [chosen] * fused:
        seqs = generate(model, labels, seed=4, prefix=[real.tokens[:30]] * 4, plan=p,
                        m_tilde=[real.header.m_tilde] * 4)
        for s in seqs:
            assert codec.slots(s).kind[-1] == 4  # replays the grammar: raises if illegal
            assert (s.tokens[:30] == real.tokens[:30]).all()
            assert codec.decode(s).shape == (8, 8)
    budget = generate(model, labels, seed=5, max_plane=1, plan=chosen.replace(**model_step))
    assert all((codec.slots(s).plane[:-1] < 1).all() for s in budget)
    # rows finishing at different steps are skipped, not compacted away; every sequence is
    # still complete, legal and decodable
    rows = generate(model, labels, seed=6, plan=chosen.replace(**model_step))
    for s in rows:
        assert codec.slots(s).kind[-1] == 4
        assert codec.decode(s).shape == (8, 8)
    assert len({len(s) for s in rows}) > 1  # the rows did finish at different steps


def decoder_state_loops() -> None:
    """A model that reads the decoder-state features: the GPU loop (the kernel computing them,
    the model's step and the fused step reading them) draws the CPU loop's tokens."""
    for shape in ((8, 8), (8, 8, 3)):
        model = tiny_model("zeroblock", shape, decoder_state=1)
        with torch.no_grad():  # features that move the logits
            model.context.table.weight.normal_(0, 1.0)
        fused = find_spec("triton") is not None
        for settings in ({}, {"cfg": 2.0}):
            cpu = generate(model, [0, 1, 2], seed=9, max_tokens=60, **settings)
            chosen = simulated_plan(model, **settings)
            model_step = chosen.replace(step="model", attention="pytorch", draw="pytorch")
            for p in [model_step] + [chosen] * fused:
                gpu = generate(model, [0, 1, 2], seed=9, max_tokens=60, plan=p, **settings)
                assert [s.tokens.tolist() for s in gpu] == [s.tokens.tolist() for s in cpu], p
        without = model.context.table.weight.clone()
        with torch.no_grad():  # negative control: the features matter to the draws
            model.context.table.weight.zero_()
        other = generate(model, [0, 1, 2], seed=9, max_tokens=60)
        model.context.table.weight.data.copy_(without)
        assert [s.tokens.tolist() for s in other] != [s.tokens.tolist() for s in cpu]


def general_path() -> None:
    """A head size the Triton kernels cannot tile (24): on a CUDA machine with Triton the plan
    takes the model's step with the reference attention, and that loop draws the CPU loop's
    tokens."""
    model = tiny_model("zeroblock", (8, 8), n_embd=48, n_head=2, n_kv_head=1)
    for settings in ({}, {"cfg": 2.0}):
        chosen = simulated_plan(model, **settings)
        assert (chosen.loop, chosen.step, chosen.attention, chosen.draw) == (
            "gpu", "model", "pytorch", "pytorch"), chosen
        gpu = generate(model, [0, 2, 1], seed=8, max_tokens=40, plan=chosen, **settings)
        cpu = generate(model, [0, 2, 1], seed=8, max_tokens=40, **settings)
        assert [s.tokens.tolist() for s in gpu] == [s.tokens.tolist() for s in cpu]


if __name__ == "__main__":
    torch.set_num_threads(1)
    {"kernel": lambda: [kernel_matches_cpu_stepping(x) for x in ("zeroblock", "zerotree")],
     "context": lambda: [kernel_matches_cpu_stepping(x, c, context=True)
                         for x in ("zeroblock", "zerotree") for c in (1, 3)]
     + [kernel_matches_cpu_stepping("zeroblock", 3, context=True, wavelet="cdf53")],
     "decoder_state": decoder_state_loops,
     "loops": loops_agree, "general": general_path}[sys.argv[1]]()
    print("ok")
