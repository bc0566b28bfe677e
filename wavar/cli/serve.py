"""``wavar serve``: the web app (a page to sample, upload, complete and download) on uvicorn.

Examples
--------
::

    wavar serve                                   # the zoo on http://127.0.0.1:8000
    wavar serve --model mnist fashion-mnist --port 8080
    wavar serve --model-root runs/ --device cuda  # also every model folder under runs/

Binds 127.0.0.1 unless ``--host`` says otherwise; the server has no authentication.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from wavar.cli.common import Parser, UsageError, run
from wavar.errors import CheckpointError

log = logging.getLogger("wavar.serve")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="wavar serve", description="Serve a web page to sample images, watch them "
               "sharpen plane by plane, and complete uploaded ones.")
    p.add_argument("--model", dest="models", action="extend", nargs="+", default=[],
                   metavar="NAME", help="models to offer (zoo names, folders under "
                   "--model-root, or folder paths), loaded at start; default: the whole zoo "
                   "(and --model-root), loaded on first use")
    p.add_argument("--model-root", type=Path, default=None, metavar="DIR",
                   help="offer every model folder (config.json + model.safetensors, or its "
                   "shards) under DIR")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--queue", type=int, default=16, metavar="N",
                   help="requests that may wait for the model; more get 429 (default 16)")
    p.add_argument("--timeout", type=float, default=120.0, metavar="S",
                   help="seconds before a request gets 504 (default 120)")
    p.add_argument("--no-live-frames", dest="live_frames", action="store_false",
                   help="sample each request in one go and send its frames afterwards, "
                   "instead of plane by plane as they are sampled (live frames cost 2-3 times "
                   "the model steps)")
    p.set_defaults(func=_serve)
    return p


def _device(name: str) -> str:
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
        log.info("device: %s (--device auto; CUDA %s)", name,
                 "available" if name == "cuda" else "not available")
    elif name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine")
    else:
        log.info("device: %s", name)
    return name


def _serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from wavar.serve import Settings, create_app
        from wavar.serve.errors import ApiError
    except ModuleNotFoundError as e:
        raise UsageError(f"'wavar serve' needs {e.name}: pip install 'wavar[serve]'") from None
    if not 0 <= args.port < 65536:
        raise UsageError(f"--port must lie in 0..65535, got {args.port}")
    if args.queue < 1 or args.timeout <= 0:
        raise UsageError("--queue must be >= 1 and --timeout > 0")
    if args.model_root is not None and not args.model_root.is_dir():
        raise UsageError(f"--model-root {args.model_root}: no such folder")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        log.info("torch threads: %d", args.threads)
    settings = Settings(models=tuple(args.models), model_root=args.model_root,
                        device=_device(args.device), queue_size=args.queue,
                        timeout_s=args.timeout, live_frames=args.live_frames)
    app = create_app(settings)
    registry = app.state.registry
    if settings.models:  # an operator's list: load now, so a broken model shows at start
        for name in registry.entries():
            try:
                registry.load(name)
            except ApiError as e:
                raise CheckpointError(e.message) from None
    log.info("offering %s; queue %d, timeout %g s, at most %d images a request",
             ", ".join(registry.entries()), settings.queue_size, settings.timeout_s,
             settings.max_images)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: anyone who can reach this machine can use the server "
                    "(it has no authentication)", args.host)
    print(f"wavar serve: open http://{args.host}:{args.port}/ (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
