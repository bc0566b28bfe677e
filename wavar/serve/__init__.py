"""``wavar serve``: a small web app over the sampler and the codec (FastAPI + uvicorn).

One static page (``static/``: plain HTML, JS and CSS, nothing fetched from elsewhere) talks to
a JSON API (:mod:`wavar.serve.app`):

* sample images of chosen classes and watch them sharpen plane by plane;
* upload an image, slide over its token count (tokens, model bits, PSNR), keep its first K
  bit-planes or a painted region and let the model invent the rest;
* download PNG, GIF and ``.wvr`` files, and an upload's prefix as a compressed ``.wvc`` file.

How frames stream. The sampler (:func:`wavar.sample.generate.generate`) has no per-token
callback, so a generation is sampled in stages (:mod:`wavar.serve.stages`): one sampler call
per bit-plane, forcing the planes sampled so far and the m~ the first call drew, with a seed
derived from the request's and the plane's; each plane's frame (images, tokens, model bits
so far) is sent as soon as its call returns, while the next plane is sampled (a raster model:
one call per token budget). The cost: the sampler steps a forced prefix one token at a time,
so each call steps again through the planes before it: for two mnist-small images 3.0 times the
model steps and 2.7 times the time of one call (README, "Web app"). ``--no-live-frames``
(``Settings.live_frames=False``) samples in one call and sends the frames afterwards. Between
frames the stream carries the step count, read by a forward hook on the model's output head
(which also stops a generation nobody waits for).

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
