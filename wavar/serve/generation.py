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
from wavar.serve.frames import decode_cut, frame_cuts, plane_ends, png_data_url, prefix_bits
from wavar.serve.models import ModelEntry
from wavar.serve.worker import Job, watching

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

def run_generation(model, jobs: list[Job], results: Store) -> None:
    """The worker's job: one generation for ``jobs`` (merged when several), then per job its
    result, one ``frame`` event per bit-plane and ``done``."""
    from wavar.sample.generate import codec_of, generate

    specs: list[GenerationSpec] = [j.payload for j in jobs]
    labels = np.concatenate([s.labels for s in specs])
    options = specs[0].options  # merged jobs have equal batch keys: equal options, no seed
    t = time.perf_counter()
    with watching(model, jobs):
        seqs = list(generate(model, labels, options))
    seconds = time.perf_counter() - t
    log.info("generated %d images (%d tokens) with %s in %.1f s", len(seqs),
             sum(map(len, seqs)), jobs[0].model, seconds)
    codec = codec_of(model)
    bits = prefix_bits(model, seqs, labels)
    start = 0
    for job, spec in zip(jobs, specs, strict=True):
        rows = slice(start, start + len(spec.labels))
        start = rows.stop
        if job.live:
            _stream(job, spec, codec, seqs[rows], bits[rows], results, seconds, len(jobs) - 1)


def _stream(job: Job, spec: GenerationSpec, codec, seqs, bits, results: Store,
            seconds: float, batched_with: int) -> None:
    cuts = frame_cuts(codec, seqs)
    images: list[np.ndarray] = []
    for i, (label, cut) in enumerate(cuts):
        images = decode_cut(codec, seqs, cut)
        row_bits = [float(b[min(k, len(b) - 1)]) for b, k in zip(bits, cut, strict=True)]
        job.emit("frame", {
            "index": i, "of": len(cuts), "label": label, "final": i == len(cuts) - 1,
            "images": [png_data_url(im) for im in images], "tokens": [int(k) for k in cut],
            "bits": [round(b, 1) for b in row_bits], "total_tokens": int(sum(cut)),
            "total_bits": round(sum(row_bits), 1)})
    result = Result(spec.model, codec, list(seqs), [int(x) for x in spec.labels], spec.names,
                    images)
    rid = results.put(result)
    job.emit("done", {"result": rid, "model": spec.model, "images": len(seqs),
                      "classes": spec.names, "tokens": [len(s) for s in seqs],
                      "bits": [round(float(b[-1]), 1) for b in bits],
                      "seconds": round(seconds, 2), "batched_with": batched_with})


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
