"""``wavar serve``: a small web app over the sampler and the codec (FastAPI + uvicorn).

One static page (``static/``: plain HTML, JS and CSS, nothing fetched from elsewhere) talks to
a JSON API (:mod:`wavar.serve.app`):

* sample images of chosen classes and watch them sharpen plane by plane;
* upload an image, slide over its token count (tokens, model bits, PSNR), keep its first K
  bit-planes or a painted region and let the model invent the rest;
* download PNG, GIF and ``.wvr`` files.

How frames stream. The sampler (:func:`wavar.sample.generate.generate`) has no per-token
callback, so a generation runs to the end and *then* streams one frame per bit-plane: the
prefix of each finished sequence up to the end of plane 1, 2, ... (per token budget for a
raster model). The frames are exactly what those prefixes decode to; they arrive after the
generation, not while it runs. While it runs the stream carries the step count, read by a
forward hook on the model's output head (which also stops a generation nobody waits for).

Serving: each model is loaded once per process (:mod:`wavar.serve.models`); one worker thread
runs every model computation, in order, from a bounded queue, and merges waiting generations
that can share a batch (:mod:`wavar.serve.worker`). Limits and their errors:
:class:`wavar.serve.settings.Settings`.
"""

from wavar.serve.settings import Settings

__all__ = ["Settings", "create_app"]


def create_app(settings: Settings | None = None):
    """The FastAPI application (see :mod:`wavar.serve.app`)."""
    from wavar.serve.app import create_app as _create

    return _create(settings or Settings())
