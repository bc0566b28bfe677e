"""Generations and uploads: from a checked request to frames, results and downloads.

:func:`plan_generation` turns a request into a :class:`GenerationSpec` (or a 4xx), before
anything is queued; :func:`run_generation` is the worker's job for one or several merged
specs. :func:`analyse_upload` is the worker's job for an uploaded image.
"""

from __future__ import annotations

import io
import logging
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from wavar.codec import CodedImage, RasterCodec, codec_from_params
from wavar.imageio import pil_to_mode
from wavar.sample.generate import class_indices
from wavar.sample.options import Region, SamplingOptions
from wavar.serve.errors import ApiError
from wavar.serve.frames import plane_ends, png_data_url, prefix_bits
from wavar.serve.models import ModelEntry
from wavar.serve.worker import Cancelled, Job, watching

log = logging.getLogger("wavar.serve")


# ----------------------------------------------------------------------------- stores

class Store:
    """The last ``capacity`` items by random id (finished generations, uploads)."""

    def __init__(self, capacity: int, what: str) -> None:
        self.capacity, self.what = capacity, what
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, item: Any) -> str:
        key = secrets.token_urlsafe(9)
        with self._lock:
            self._items[key] = item
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return key

    def get(self, key: str) -> Any:
        with self._lock:
            if key in self._items:
                return self._items[key]
        raise ApiError(404, f"no {self.what} {key!r}: unknown, or dropped (the server keeps "
                            f"the last {self.capacity}); run it again")


@dataclass
class Upload:
    """An uploaded image fitted to one model, its code and the model bits of its prefixes."""

    model: str
    label: int
    class_name: str
    image: np.ndarray  # fitted to the model's image shape
    original_size: tuple[int, int]  # (height, width) as uploaded
    seq: CodedImage
    bits: np.ndarray  # bits[t] of the first t tokens, up to the model's context
    codec: Any

    def bits_at(self, k: int) -> float | None:
        return float(self.bits[k]) if k < len(self.bits) else None


@dataclass
class Result:
    """A finished generation, kept for downloads."""

    model: str
    codec: Any
    seqs: list[CodedImage]
    labels: list[int]
    names: list[str]
    images: list[np.ndarray]


# ----------------------------------------------------------------------------- requests

@dataclass
class GenerationSpec:
    """A checked generation request: the rows' labels and the sampler's options."""

    model: str
    labels: np.ndarray
    names: list[str]  # each row's class name
    options: SamplingOptions
    conditioned: bool = False

    def batch_key(self) -> tuple | None:
        """Requests with equal keys may share one generation: no seed (a seed asks for a
        reproducible run of its own) and no conditioning image."""
        if self.options.seed is not None or self.conditioned:
            return None
        o = self.options
        return (self.model, o.cfg, o.temperature, o.top_k, o.top_p, o.max_tokens, o.max_plane)


def plan_generation(entry: ModelEntry, req: Any, uploads: Store, max_images: int
                    ) -> GenerationSpec:
    """Check a generation request (``req``: the app's GenerateRequest) against the model.

    Raises :class:`ApiError` (400/404) naming what to change.
    """
    info = entry.info()
    names = info["classes"]
    spec = req.classes
    if isinstance(spec, list) and not spec:
        raise ApiError(400, "choose at least one class")
    try:
        classes = class_indices(names, spec)
    except ValueError as e:
        raise ApiError(400, str(e)) from None
    total = req.n * len(classes)
    if total > max_images:
        raise ApiError(400, f"{req.n} images x {len(classes)} classes = {total} images; at most "
                            f"{max_images} per request: lower n or choose fewer classes")
    labels = np.repeat(classes, req.n)
    settings: dict[str, Any] = dict(cfg=req.cfg, temperature=req.temperature, top_k=req.top_k,
                                    top_p=req.top_p, seed=req.seed, max_tokens=req.max_tokens,
                                    max_plane=req.max_plane)
    conditioned = req.upload is not None
    if req.keep_planes is not None and req.mask is not None:
        raise ApiError(400, "give keep_planes (prefix completion) or mask (region completion), "
                            "not both")
    if (req.keep_planes is not None or req.mask is not None) and req.upload is None:
        raise ApiError(400, "keep_planes and mask need an uploaded image: upload one first "
                            "(POST /api/uploads) and pass its id as upload")
    if conditioned:
        up: Upload = uploads.get(req.upload)
        if up.model != entry.name:
            raise ApiError(400, f"upload {req.upload} was fitted to model {up.model!r}, not "
                                f"{entry.name!r}: upload the image again for this model")
        if isinstance(up.codec, RasterCodec):
            raise ApiError(400, f"model {entry.name!r} speaks the raster language: prefix and "
                                "region completion need a wavelet model")
        if req.mask is not None:
            settings["region"] = Region(up.image, _mask(req.mask, up.image.shape[:2]))
        else:  # keep the first K planes (default 2), the model invents the rest
            ends = plane_ends(up.codec, up.seq)
            k = 2 if req.keep_planes is None else req.keep_planes
            if k > len(ends):
                raise ApiError(400, f"keep_planes={k}, but the upload has {len(ends)} "
                                    f"bit-planes: keep 0..{len(ends)}")
            prefix = up.seq.tokens[: ends[k - 1] if k else 0]
            settings["prefix"] = [prefix] * len(labels)
            settings["m_tilde"] = [up.seq.header.m_tilde] * len(labels)
    try:
        options = SamplingOptions(**settings)
    except ValueError as e:
        raise ApiError(400, str(e)) from None
    return GenerationSpec(entry.name, labels, [names[c] for c in labels], options, conditioned)


def _mask(rows: list[list[Any]], shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    try:
        mask = np.asarray(rows, np.float64)
    except (TypeError, ValueError):
        raise ApiError(400, "mask must be a list of rows of numbers (1 = keep)") from None
    if mask.shape != (h, w):
        raise ApiError(400, f"mask is {'x'.join(map(str, mask.shape))}; it must be {h}x{w} "
                            "(rows x columns), the model's image size")
    return mask >= 0.5


# ----------------------------------------------------------------------------- generation

def run_generation(model, jobs: list[Job], results: Store, live: bool = True) -> None:
    """The worker's job: one generation for ``jobs`` (merged when several). Each job gets a
    ``frame`` event per bit-plane of its rows, sent as soon as that plane is sampled
    (``live``: :class:`~wavar.serve.stages.StagedGeneration`; else all after one sampler call,
    :class:`~wavar.serve.stages.OneShotGeneration`), then ``done`` once its rows are
    complete (in a merged batch, a job whose images have fewer planes is answered first)."""
    from wavar.serve.stages import OneShotGeneration, StagedGeneration

    specs: list[GenerationSpec] = [j.payload for j in jobs]
    labels = np.concatenate([s.labels for s in specs])
    options = specs[0].options  # merged jobs have equal batch keys: equal options, no seed
    gen = (StagedGeneration if live else OneShotGeneration)(model, labels, options)
    clock = Clock(time.time(), time.perf_counter(), gen)
    streams, start = [], 0
    for job, spec in zip(jobs, specs, strict=True):
        streams.append(JobStream(job, spec, slice(start, start + len(spec.labels)),
                                 len(jobs) - 1))
        start += len(spec.labels)
    bits: list[np.ndarray] = [np.zeros(1)] * len(labels)
    progress = {"stage": 1}
    with watching(model, jobs, progress):
        for frame in gen:
            waiting = [s for s in streams if not s.finished]
            if not any(s.job.live for s in waiting):
                raise Cancelled()
            changed = np.flatnonzero(frame.changed)
            if changed.size:
                measure = frame.measure or frame.seqs
                for i, b in zip(changed, prefix_bits(model, [measure[i] for i in changed],
                                                     labels[changed]), strict=True):
                    bits[i] = b
            for stream in waiting:
                stream.send(frame, gen.codec, bits, clock, results)
            progress["stage"] = gen.calls + 1
    log.info("generated %d images with %s in %.1f s (%d sampler calls)", len(labels),
             jobs[0].model, clock.seconds(), gen.calls)


@dataclass
class Clock:
    """When a generation began (wall clock, for clients; and ``perf_counter``)."""

    wall: float
    start: float
    gen: Any

    def seconds(self) -> float:
        return time.perf_counter() - self.start


@dataclass
class JobStream:
    """One job's rows of a generation and what it has been sent."""

    job: Job
    spec: GenerationSpec
    rows: slice
    batched_with: int
    sent: int = 0
    finished: bool = False

    def send(self, frame, codec, bits: list[np.ndarray], clock: Clock, results: Store) -> None:
        """Send this job its rows of ``frame``; with the last of them, its result."""
        rows = self.rows
        final = bool(frame.complete[rows].all())
        if not self.job.live:
            self.finished = final  # nobody listens: skip its frames, stop when its rows stop
            return
        seqs = frame.seqs[rows]
        images = codec.decode_batch(list(seqs))
        cut = [len(s) for s in seqs]
        row_bits = [float(b[min(k, len(b) - 1)]) for b, k in zip(bits[rows], cut, strict=True)]
        label, of = frame.describe(rows)
        self.job.emit("frame", {
            "index": self.sent, "of": max(of, self.sent + 1), "label": label, "final": final,
            "stage": frame.stage, "seconds": round(clock.seconds(), 3),
            "images": [png_data_url(im) for im in images], "tokens": cut,
            "bits": [round(b, 1) for b in row_bits], "total_tokens": int(sum(cut)),
            "total_bits": round(sum(row_bits), 1)})
        self.sent += 1
        if not final:
            return
        self.finished = True
        spec = self.spec
        rid = results.put(Result(spec.model, codec, list(seqs), [int(x) for x in spec.labels],
                                 spec.names, images))
        self.job.emit("done", {
            "result": rid, "model": spec.model, "images": len(seqs), "classes": spec.names,
            "tokens": cut, "bits": [round(b, 1) for b in row_bits],
            "seconds": round(clock.seconds(), 2), "batched_with": self.batched_with,
            "stages": frame.stage, "stage_starts": [round(t, 3) for t in clock.gen.starts],
            "started_at": round(clock.wall, 3)})


# ----------------------------------------------------------------------------- uploads

@dataclass
class UploadRequest:
    """An uploaded file, checked and read, waiting for the worker to code and measure it."""

    entry: ModelEntry
    image: np.ndarray
    original_size: tuple[int, int]
    label: int
    class_name: str


def read_upload(data: bytes, filename: str, max_side: int) -> Image.Image:
    """An uploaded file as a Pillow image, its size checked before its pixels are decoded (a
    small file can unpack to a huge image). 413/415 on a file the server will not take."""
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:  # Pillow's own check of a huge declared size
        raise ApiError(413, f"{filename or 'the image'} declares a huge size; the limit is "
                            f"{max_side}x{max_side}: scale it down first") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise ApiError(415, f"{filename or 'the upload'} is not an image this server can read "
                            "(try PNG, JPEG, GIF, BMP or WebP)") from None
    w, h = img.size
    if w > max_side or h > max_side:
        raise ApiError(413, f"{filename or 'the image'} is {w}x{h} pixels; the limit is "
                            f"{max_side}x{max_side}: scale it down first")
    try:
        img.load()
        return ImageOps.exif_transpose(img)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ApiError(415, f"{filename or 'the upload'} cannot be decoded: {e}") from None


def fit_image(img: Image.Image, shape: list[int]) -> np.ndarray:
    """The image as the model sees it: grey or RGB like the model, centre-cropped to its
    aspect and resized to its size."""
    h, w, c = shape
    img = pil_to_mode(img, "RGB" if c == 3 else "L")
    img = ImageOps.fit(img, (w, h), method=Image.Resampling.LANCZOS)
    return np.asarray(img, np.uint8).copy()


def analyse_upload(model, jobs: list[Job], uploads: Store) -> None:
    """The worker's job for an upload: code it, measure its prefixes' model bits, keep it."""
    job = jobs[0]
    req: UploadRequest = job.payload
    codec = codec_from_params(model.config.codec)
    seq = codec.encode(req.image)
    bits = prefix_bits(model, [seq], [req.label])[0]
    up = Upload(req.entry.name, req.label, req.class_name, req.image, req.original_size, seq,
                bits, codec)
    uid = uploads.put(up)
    ends = [len(seq)] if isinstance(codec, RasterCodec) else plane_ends(codec, seq)
    job.emit("done", {
        "upload": uid, "model": up.model, "class": up.class_name,
        "height": int(req.image.shape[0]), "width": int(req.image.shape[1]),
        "original": {"height": req.original_size[0], "width": req.original_size[1]},
        "tokens": len(seq), "plane_ends": ends, "bits": round(float(bits[-1]), 1),
        "bits_tokens": len(bits) - 1, "image": png_data_url(req.image),
        "lossless": bool(getattr(codec, "lossless", True))})


def code_upload(model, jobs: list[Job]) -> None:
    """The worker's job for an upload's ``.wvc``: its first K tokens range-coded with the
    model (:func:`wavar.compress.compress`), conditioned on the upload's class; the file names
    the model when it is a zoo model (``decompress`` then loads it by itself)."""
    from wavar.compress import compress

    job = jobs[0]
    up, k, zoo_name = job.payload
    try:
        data = compress(model, up.image, zoo_name, label=up.label, tokens=k)
    except ModuleNotFoundError as e:  # the range coder, constriction, is in the model extra
        raise ApiError(501, f"this server cannot write .wvc files: {e}") from None
    job.emit("done", {"file": data, "tokens": k})
