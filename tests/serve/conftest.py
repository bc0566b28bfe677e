"""Fixtures of the ``wavar serve`` tests: a tiny random model, an app, a live server."""

import base64
import io
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wavar import WaveletCodec
from wavar.model.transformer import WaveletGPT, config_from_preset

SHAPE = (8, 8)  # the tiny model's images: about 200 tokens, 5 bit-planes
FAST = {"max_plane": 3}  # generations of the API tests stop early: they test plumbing


def save_tiny_model(folder: Path) -> Path:
    """A random 2-layer model of 8 x 8 grey images, classes a, b, c."""
    codec = WaveletCodec("bior4.4", final_threshold=2**-2)
    cfg = config_from_preset("tiny", num_classes=3, max_seq_len=1024, vocab_size=7,
                             n_channels=1)
    cfg.codec = {**codec.params(), "image_shape": list(SHAPE), "classes": ["a", "b", "c"],
                 "m_tilde_min": 2, "m_tilde_hist": [[1, 2, 1]] * 3}
    cfg.sampling = {"cfg": [1.0, 2.0], "top_p": 0.9}  # what the page fills in for it
    torch.manual_seed(0)
    model = WaveletGPT(cfg).eval()
    with torch.no_grad():  # a peaked head: less noisy images than a uniform one
        model.head.weight.normal_(0, 0.5)
    model.save_pretrained(folder / "tiny")
    return folder / "tiny"


@pytest.fixture(scope="session")
def model_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    save_tiny_model(root)
    return root


def png_file(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def data_url_image(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


class LiveServer:
    """uvicorn serving ``app`` from a thread, on a free port of 127.0.0.1."""

    def __init__(self, app) -> None:
        import uvicorn

        self.app = app
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture(scope="session")
def live_server(model_root):
    """One live server for the concurrency and browser tests: the tiny model and mnist-small."""
    from wavar.serve import Settings, create_app

    app = create_app(Settings(models=("tiny", "mnist-small"), model_root=model_root))
    with LiveServer(app) as server:
        yield server


class Gate:
    """While open is not set, holds the worker before each job: lets a test fill the queue.
    A context manager: the worker runs freely again on exit."""

    def __init__(self, worker) -> None:
        self.worker, self.open = worker, threading.Event()

    def __enter__(self) -> "Gate":
        run = self.worker._run

        def gated(jobs):
            self.open.wait(30)
            run(jobs)

        self.worker._run = gated
        return self

    def __exit__(self, *exc) -> None:
        self.open.set()
        del self.worker._run  # back to the class's method

    def wait_until_in(self, requests: int, timeout: float = 30) -> None:
        """Until ``requests`` requests are in: held in the worker's job (the worker may have
        merged unseeded ones that arrived together into it) or queued."""
        deadline = time.monotonic() + timeout
        while not (self.worker.running and
                   len(self.worker.running) + self.worker.waiting() == requests):
            assert time.monotonic() < deadline, (len(self.worker.running), self.worker.waiting())
            time.sleep(0.01)

    def wait_until(self, running: int, waiting: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while (len(self.worker.running), self.worker.waiting()) != (running, waiting):
            assert time.monotonic() < deadline, (len(self.worker.running), self.worker.waiting())
            time.sleep(0.01)
