"""Eight requests at once against a live uvicorn: each answered, and answered right."""

import json
import threading
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
            gate.wait_until_in(8)  # all eight in: the first job held, the rest queued
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
    body = {"model": "mnist-small", "classes": ["0"], "n": 8}  # several seconds of sampling
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


def test_frames_arrive_while_sampling_goes_on(live_server, monkeypatch):
    """The last plane's sampler call waits until the client has the first frame: a frame
    streams as soon as its plane is sampled, not when the whole generation ends."""
    import wavar.sample.generate as sampling

    sample, seen, waited = sampling.generate, threading.Event(), []

    def generate(model, labels, options=None, **settings):
        if options is not None and options.max_plane == FAST["max_plane"]:  # the last plane
            waited.append(seen.wait(30))
        return sample(model, labels, options, **settings)

    monkeypatch.setattr(sampling, "generate", generate)
    body = {"model": "tiny", "classes": ["a", "b"], "n": 1, "seed": 1, **FAST}
    events = []
    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        with client.stream("POST", "/api/generate?stream=true", json=body) as r:
            kind = None
            for line in r.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    events.append((kind, json.loads(line[6:])))
                    if kind == "frame":
                        seen.set()
    assert waited == [True]  # the client had frame 1 before the last call began
    kinds = [k for k, _ in events]
    frames = [d for k, d in events if k == "frame"]
    assert kinds[-1] == "done" and kinds.index("frame") < len(kinds) - 1
    assert [f["stage"] for f in frames] == [1, 2, 3] and frames[-1]["final"]
