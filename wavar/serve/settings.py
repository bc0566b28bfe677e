"""What a server offers and how far it goes: one frozen dataclass, set by ``wavar serve``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    """Settings of one server.

    Parameters
    ----------
    models : the models offered: zoo names, folder names under ``model_root`` or folder paths
        (named by the folder). Empty: the whole zoo plus every model folder under
        ``model_root``.
    model_root : a folder whose sub-folders (``config.json`` + weights: ``model.safetensors``
        or its shards) clients may name. Clients only ever name models; a name never becomes a
        path of their choosing.
    device : where the models run ("cpu", "cuda", "cuda:1", ...).
    queue_size : generations and uploads that may wait for the worker; one more gets 429.
    timeout_s : a request still unanswered after this long gets 504 (a generation in the
        CPU loop is stopped at its next step).
    max_images : images per generation request (n x classes).
    max_upload_bytes, max_side : the largest upload accepted, in bytes and in pixels a side.
    max_batch_rows : most rows in one generation when waiting requests are merged.
    keep_results : finished generations and uploads kept for downloads (each, oldest dropped).
    live_frames : sample plane by plane and send each frame as its plane is sampled
        (:mod:`wavar.serve.stages`; 2-3 times the model steps on a CPU); False: sample in one
        go, then send the frames (a seed gives other images in the two modes).
    """

    models: tuple[str, ...] = ()
    model_root: Path | None = None
    device: str = "cpu"
    queue_size: int = 16
    timeout_s: float = 120.0
    max_images: int = 64
    max_upload_bytes: int = 4 * 2**20
    max_side: int = 1024
    max_batch_rows: int = 64
    keep_results: int = 64
    live_frames: bool = True

    def limits(self) -> dict:
        """The limits a client should know (the page reads them from ``/api/models``)."""
        return {"max_images": self.max_images, "max_upload_bytes": self.max_upload_bytes,
                "max_side": self.max_side, "queue_size": self.queue_size,
                "timeout_s": self.timeout_s, "live_frames": self.live_frames}
