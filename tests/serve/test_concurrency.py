"""Eight requests at once against a live uvicorn: each answered, and answered right."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.serve.conftest import FAST, Gate

pytest.importorskip("uvicorn", reason="wavar serve needs the serve extra: pip install -e .[serve]")
httpx = pytest.importorskip("httpx")


def test_eight_concurrent_requests_are_all_answered_correctly(live_server):
    unseeded = [{"classes": ["a"], "n": 1}, {"classes": ["b"], "n": 2},
                {"classes": ["c"], "n": 3}, {"classes": ["a", "c"], "n": 1}]
    seeded = [{"classes": ["b"], "n": 2, "seed": s} for s in range(4)]
    bodies = [{"model": "tiny", **FAST, **b} for b in unseeded + seeded]

    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        def ask(body):
            return client.post("/api/generate", json=body)

        alone = [ask(b).json() for b in bodies[4:]]  # the seeded ones, one at a time
        with Gate(live_server.app.state.worker) as gate, ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(ask, b) for b in bodies]
            gate.wait_until(running=1, waiting=7)  # all eight in: one held, seven queued
            gate.open.set()
            answers = [f.result() for f in futures]

    for body, r in zip(bodies, answers, strict=True):
        assert r.status_code == 200, r.text
        done = r.json()
        classes = [c for c in body["classes"] for _ in range(body["n"])]
        assert done["classes"] == classes and done["images"] == len(classes)
        assert len(done["frames"][-1]["images"]) == len(classes)
    for solo, r in zip(alone, answers[4:], strict=True):  # a seed's run is its own
        assert r.json()["batched_with"] == 0
        assert r.json()["frames"][-1]["images"] == solo["frames"][-1]["images"]
    # the unseeded requests that waited together shared one generation
    assert sum(r.json()["batched_with"] > 0 for r in answers[:4]) >= 2


def test_a_client_that_leaves_frees_the_worker(live_server):
    """A stream closed mid-generation stops the generation at its next model step."""
    worker = live_server.app.state.worker
    stopped = worker.stopped
    body = {"model": "mnist", "classes": ["0"], "n": 8}  # several seconds of sampling
    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        with client.stream("POST", "/api/generate?stream=true", json=body) as r:
            for line in r.iter_lines():
                if line == "event: progress":  # sampling has begun
                    break
        deadline = time.monotonic() + 30  # generous: a busy machine is slow, not wrong
        while worker.running:
            assert time.monotonic() < deadline, "the generation outlived its client"
            time.sleep(0.05)
        assert worker.stopped == stopped + 1  # stopped, not finished
        r = client.post("/api/generate", json={"model": "tiny", **FAST})
        assert r.status_code == 200  # and the worker serves the next request
