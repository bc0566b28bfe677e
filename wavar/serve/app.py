"""The web app: the page, the JSON API and the downloads.

Endpoints (all errors are ``{"error": message}`` with a 4xx/5xx status):

=========================================  =================================================
``GET  /``                                  the page (``static/index.html``)
``GET  /api/models``                        offered models (classes, shape, recommended
                                            sampling) and the limits
``GET  /api/health``                        queue and loaded models
``POST /api/generate[?stream=true]``        sample (JSON body: :class:`GenerateRequest`);
                                            streamed as server-sent events, or one JSON answer
``POST /api/uploads``                       multipart ``file``, ``model``, ``class``: code an
                                            image with a model's codec (-> ``upload`` id)
``GET  /api/uploads/{id}/frame?tokens=K``   its first K tokens decoded: image, bits, PSNR
``GET  /api/uploads/{id}/image.png``        the same as a PNG (``?tokens=K&scale=S``)
``GET  /api/uploads/{id}/prefix.wvr``       its first K tokens as a ``.wvr`` file
``GET  /api/uploads/{id}/prefix.wvc``       its first K tokens range-coded with the model: a
                                            ``.wvc`` file (``wavar decompress`` reads it)
``GET  /api/results/{id}/FILE``             a generation's ``grid.png``, ``grid.gif``,
                                            ``I.png``, ``I.gif``, ``I.wvr`` (image I);
                                            ``?scale=S``: pixel upscale (default: I.png
                                            native, the others to about 128 px)
=========================================  =================================================

Events of a stream, in order: ``queued`` (jobs ahead), ``started``, ``progress`` (model steps
and the sampler call, while sampling), ``frame`` (one per bit-plane, sent as soon as that
plane is sampled: images, tokens and model bits so far per image, the sampler calls made and
the seconds since the generation began), ``done`` (the result id, the seconds, the sampler
calls and when each began) or ``error`` (status and message). Frames and progress interleave.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from wavar.codec import RasterCodec
from wavar.eval.metrics import psnr
from wavar.serve.errors import ApiError
from wavar.serve.frames import (
    coarse_to_fine,
    display_scale,
    finite,
    gif_bytes,
    png_bytes,
    png_data_url,
    upscale,
)
from wavar.serve.generation import (
    Result,
    Store,
    Upload,
    UploadRequest,
    analyse_upload,
    code_upload,
    fit_image,
    plan_generation,
    read_upload,
    run_generation,
)
from wavar.serve.models import ModelRegistry
from wavar.serve.settings import Settings
from wavar.serve.worker import Job, Worker
from wavar.viz import grid

log = logging.getLogger("wavar.serve")

STATIC = Path(__file__).parent / "static"
RESULT_FILE = re.compile(r"(grid|\d{1,3})\.(png|gif|wvr)")
# a JSON body (a mask, settings) is small; an upload's multipart overhead is a few hundred bytes
BODY_SLACK = 64 * 1024


Cfg = Annotated[float, Field(ge=0, le=20)]
Temperature = Annotated[float, Field(gt=0, le=10)]
TopP = Annotated[float, Field(gt=0, le=1)]
PLANES = Field(min_length=1, max_length=64)  # one value per bit-plane


class GenerateRequest(BaseModel):
    """A generation: ``n`` images of each class; with ``upload``, prefix completion (keep its
    first ``keep_planes`` bit-planes, default 2) or region completion (``mask``, the model's
    height x width, 1 = keep)."""

    model_config = ConfigDict(extra="forbid")

    model: str
    classes: list[str | int] | str = "all"
    n: int = Field(1, ge=1, le=64, description="images per class")
    seed: int | None = Field(None, ge=0, le=2**62)
    # cfg, temperature, top_p: one value, or one per bit-plane (the last holds for the planes
    # after it; a wavelet model only); omitted: plain sampling, as in the Python API
    cfg: Cfg | Annotated[list[Cfg], PLANES] = 1.0
    temperature: Temperature | Annotated[list[Temperature], PLANES] = 1.0
    top_k: int | None = Field(None, ge=0)
    top_p: TopP | Annotated[list[TopP], PLANES] | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_plane: int | None = Field(None, ge=1, le=64)
    upload: str | None = Field(None, max_length=64)
    keep_planes: int | None = Field(None, ge=0, le=64)
    mask: list[list[float]] | None = None


def create_app(settings: Settings) -> FastAPI:
    registry = ModelRegistry(settings)
    worker = Worker(registry, settings.queue_size, settings.max_batch_rows)
    results = Store(settings.keep_results, "result")
    uploads = Store(settings.keep_results, "upload")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        worker.stop()

    # no /docs page: FastAPI's loads its scripts from a CDN, and the server works offline
    app = FastAPI(title="wavar", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json")
    app.state.settings, app.state.registry, app.state.worker = settings, registry, worker
    app.state.results, app.state.uploads = results, uploads
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # -- errors: one shape, {"error": "..."}, whatever raised them

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return JSONResponse({"error": e.message}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        parts = []
        for err in e.errors():
            where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query"))
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return JSONResponse({"error": "; ".join(parts) or "invalid request"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(e.detail)}, status_code=e.status_code)

    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + BODY_SLACK)

    # -- jobs: submitted to the worker, answered through an asyncio queue

    def submit(model: str, work, payload: Any, rows: int = 0, batch_key=None
               ) -> tuple[Job, asyncio.Queue]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def emit(kind: str, data: dict) -> None:  # called from the worker thread
            try:
                loop.call_soon_threadsafe(events.put_nowait, (kind, data))
            except RuntimeError:  # the loop has closed: nobody listens any more
                pass

        job = Job(model, work, emit, settings.timeout_s, batch_key, rows, payload)
        ahead = worker.submit(job)
        events.put_nowait(("queued", {"ahead": ahead}))
        return job, events

    async def next_event(job: Job, events: asyncio.Queue) -> tuple[str, dict]:
        try:
            return await asyncio.wait_for(events.get(), max(job.deadline - time.monotonic(),
                                                            0.001))
        except TimeoutError:
            job.give_up()
            raise ApiError(504, f"no answer within the server's limit of "
                                f"{settings.timeout_s:g} s: ask for fewer images or tokens, "
                                "or try again when the server is less busy") from None

    async def answer(job: Job, events: asyncio.Queue) -> dict:
        """Wait for ``done`` (frames collected into it) or raise the job's error."""
        frames = []
        try:
            while True:
                kind, data = await next_event(job, events)
                if kind == "frame":
                    frames.append(data)
                elif kind == "done":
                    return {**data, "frames": frames} if frames else data
                elif kind == "error":
                    raise ApiError(data["status"], data["error"])
        finally:
            job.give_up()  # a client that left (or timed out) frees the worker

    async def stream(job: Job, events: asyncio.Queue):
        try:
            while True:
                try:
                    kind, data = await next_event(job, events)
                except ApiError as e:
                    kind, data = "error", e.payload()
                yield f"event: {kind}\ndata: {json.dumps(data)}\n\n"
                if kind in ("done", "error"):
                    return
        finally:
            job.give_up()

    # -- the page and what it asks

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/models")
    async def models() -> dict:
        loaded = set(registry.loaded())
        return {"models": [{**e.info(), "loaded": e.name in loaded}
                           for e in registry.entries().values()],
                "limits": settings.limits(), "device": settings.device}

    @app.get("/api/health")
    async def health() -> dict:
        return {"status": "ok", "waiting": worker.waiting(), "running": len(worker.running),
                "stopped": worker.stopped, "loaded": registry.loaded()}

    @app.post("/api/generate")
    async def generate(req: GenerateRequest, stream_events: bool = Query(False, alias="stream")
                       ) -> Any:
        entry = registry.entry(req.model)
        spec = plan_generation(entry, req, uploads, settings.max_images)
        job, events = submit(entry.name, partial(run_generation, results=results,
                                                 live=settings.live_frames), spec,
                             rows=len(spec.labels), batch_key=spec.batch_key())
        if stream_events:
            return StreamingResponse(stream(job, events), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache",
                                              "X-Accel-Buffering": "no"})
        return await answer(job, events)

    @app.post("/api/uploads")
    async def upload(file: Annotated[UploadFile, File()], model: Annotated[str, Form()],
                     class_name: Annotated[str | None, Form(alias="class")] = None) -> dict:
        entry = registry.entry(model)
        data = await file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise ApiError(413, f"{file.filename or 'the upload'} is over the limit of "
                                f"{_mb(settings.max_upload_bytes)}: send a smaller file")
        if not data:
            raise ApiError(400, f"{file.filename or 'the upload'} is empty")
        info = entry.info()
        img = read_upload(data, file.filename or "", settings.max_side)
        classes = info["classes"]
        label = 0
        if class_name not in (None, ""):
            from wavar.sample.generate import class_indices

            try:
                label = class_indices(classes, [class_name])[0]
            except ValueError as e:
                raise ApiError(400, str(e)) from None
        req = UploadRequest(entry, fit_image(img, info["image_shape"]), (img.height, img.width),
                            label, classes[label])
        job, events = submit(entry.name, partial(analyse_upload, uploads=uploads), req)
        return await answer(job, events)

    def prefix_length(uid: str, tokens: int | None) -> tuple[Upload, int]:
        up: Upload = uploads.get(uid)
        return up, len(up.seq) if tokens is None else min(tokens, len(up.seq))

    def prefix_of(uid: str, tokens: int | None) -> tuple[Upload, int, Any]:
        up, k = prefix_length(uid, tokens)
        return up, k, up.codec.decode(up.seq, k)

    @app.get("/api/uploads/{uid}/frame")
    def upload_frame(uid: str, tokens: int = Query(..., ge=0)) -> dict:
        up, k, img = prefix_of(uid, tokens)
        p = psnr(up.image, img)
        return {"tokens": k, "of": len(up.seq), "bits": _round(up.bits_at(k)), "psnr": finite(p),
                "exact": p == float("inf"), "image": png_data_url(img)}

    @app.get("/api/uploads/{uid}/image.png")
    def upload_png(uid: str, tokens: int | None = Query(None, ge=0),
                   scale: int = Query(1, ge=1, le=16)) -> Response:
        up, k, img = prefix_of(uid, tokens)
        return _file(png_bytes(img, scale), "image/png", f"wavar-{up.model}-{k}tok.png")

    @app.get("/api/uploads/{uid}/prefix.wvr")
    def upload_wvr(uid: str, tokens: int | None = Query(None, ge=0)) -> Response:
        up, k = prefix_length(uid, tokens)
        _check_wvr(up.codec, up.model)
        return _file(up.seq[:k].to_bytes(), "application/octet-stream",
                     f"wavar-{up.model}-{k}tok.wvr")

    @app.get("/api/uploads/{uid}/prefix.wvc")
    async def upload_wvc(uid: str, tokens: int | None = Query(None, ge=0)) -> Response:
        up, k = prefix_length(uid, tokens)
        entry = registry.entry(up.model)
        job, events = submit(entry.name, code_upload, (up, k, entry.name if entry.in_zoo
                                                      else ""))
        data = (await answer(job, events))["file"]
        return _file(data, "application/octet-stream", f"wavar-{up.model}-{k}tok.wvc")

    @app.get("/api/results/{rid}/{name}")
    def result_file(rid: str, name: str, scale: int = Query(0, ge=0, le=16)) -> Response:
        res: Result = results.get(rid)
        m = RESULT_FILE.fullmatch(name)
        if m is None:
            raise ApiError(404, f"no file {name!r}: a result has grid.png, grid.gif and, per "
                                "image I (from 0), I.png, I.gif, I.wvr")
        which, kind = m.groups()
        s = scale or display_scale(res.images[0].shape)
        stem = f"wavar-{res.model}-{rid[:6]}"
        if which == "grid":
            ncols = min(8, len(res.images))
            if kind == "png":
                return _file(png_bytes(grid(res.images, ncols=ncols, scale=s)), "image/png",
                             f"{stem}-grid.png")
            if kind == "gif":
                frames = [grid(f, ncols=ncols, scale=s)
                          for f in coarse_to_fine(res.codec, res.seqs)]
                return _file(gif_bytes(frames), "image/gif", f"{stem}-grid.gif")
            raise ApiError(404, "a .wvr file holds one image: ask for I.wvr (I from 0)")
        i = int(which)
        if i >= len(res.seqs):
            raise ApiError(404, f"result {rid} has images 0..{len(res.seqs) - 1}, not {i}")
        if kind == "png":
            return _file(png_bytes(res.images[i], scale or 1), "image/png",
                         f"{stem}-{i}.png")
        if kind == "gif":
            frames = [upscale(f[0], s) for f in coarse_to_fine(res.codec, [res.seqs[i]])]
            return _file(gif_bytes(frames), "image/gif", f"{stem}-{i}.gif")
        _check_wvr(res.codec, res.model)
        return _file(res.seqs[i].to_bytes(), "application/octet-stream", f"{stem}-{i}.wvr")

    return app


class BodyLimit:
    """413 for a request body over ``limit`` bytes: at once when its Content-Length says so,
    else (a chunked upload) as soon as that many bytes have come, before the app parses any
    of it. (Plain ASGI rather than ``@app.middleware``, which would wrap the event streams.)"""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        size = dict(scope["headers"]).get(b"content-length")
        if size is not None:
            if size.isdigit() and int(size) > self.limit:
                await self._refuse(f"a request body of {int(size)} bytes", scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        chunks, total, more = [], 0, True  # no length given: read up to the limit, then replay
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            chunks.append(message.get("body", b""))
            total += len(chunks[-1])
            more = message.get("more_body", False)
            if total > self.limit:
                await self._refuse("a request body", scope, receive, send)
                return
        body = b"".join(chunks)

        async def replay():
            nonlocal body
            if body is None:
                return await receive()
            message, body = {"type": "http.request", "body": body, "more_body": False}, None
            return message

        await self.app(scope, replay, send)

    async def _refuse(self, what: str, scope, receive, send) -> None:
        message = f"{what} over the limit of {_mb(self.limit - BODY_SLACK)}: send a smaller file"
        await JSONResponse({"error": message}, status_code=413)(scope, receive, send)


def _check_wvr(codec, model: str) -> None:
    if isinstance(codec, RasterCodec):
        raise ApiError(400, f"model {model!r} speaks the raster language (256 tokens); the "
                            ".wvr format holds wavelet-language tokens: download PNG or GIF")


def _file(data: bytes, media_type: str, filename: str) -> Response:
    return Response(data, media_type=media_type,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def _mb(n: int) -> str:
    return f"{n / 2**20:g} MB"
