"""The GPU sampling path, run on the CPU in numba's CUDA simulator (in a subprocess, since
the simulator is chosen when numba.cuda is first imported)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_simulated(what: str) -> None:
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "TRITON_INTERPRET": "1",
           "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "tests.sample.gpu_grammar_sim", what], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("what", ["kernel", "context", "loops", "decoder_state", "general"])
def test_gpu_grammar_in_the_cuda_simulator(what):
    """kernel: grammar.py compiled for CUDA steps exactly like the CPU grammar (both
    languages). loops: the GPU sampling loop (the model's step and the fused one, plain,
    guided and filtered) draws the same tokens as the CPU loop, keeps a forced prefix and
    honours a plane budget. general: so does the path a model whose head size the Triton
    kernels cannot tile takes on a GPU. context: the kernel's decoder-state features equal
    the CPU grammar's (both languages, grey and colour; and issue 19's lossless colour
    geometry, cdf53 to threshold 1). decoder_state: a model reading them
    draws the same tokens in both loops (the model's step and the fused one)."""
    run_simulated(what)
