"""Lossless image codecs from packages, the yardstick of wavar's lossless files (issue 21).

Bits per dimension (8 x file bytes / pixel values) of each image coded alone, as a file of its
own, by:

- PNG (Pillow, zlib, ``optimize=True``),
- WebP lossless (Pillow/libwebp, quality 100, method 6: its slowest, smallest),
- JPEG 2000 lossless (Pillow/OpenJPEG, the reversible 5/3 wavelet, one layer),
- JPEG-XL lossless (imagecodecs/libjxl, effort 9: its slowest, smallest; a bare codestream),
- JPEG-LS (imagecodecs/CharLS, near-lossless level 0 = lossless),
- AVIF lossless (imagecodecs/libavif, quality 100, speed 0).

Every file is decoded again and compared with the image: a codec that does not give the exact
pixels back is reported as not lossless (``exact``), not silently counted. A codec whose
package is missing is reported as missing, with the reason. Image files carry headers (PNG ~60
bytes, JPEG-XL ~20), which weigh on 28 x 28 images as they do on ``.wvc`` files.

    PYTHONPATH=. python benchmarks/lossless_codecs.py --dataset mnist            # all 10,000
    PYTHONPATH=. python benchmarks/lossless_codecs.py --dataset cifar10 --n 1000

writes ``benchmarks/results/codec/lossless_codecs_<dataset>_<n>.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections.abc import Callable

import numpy as np
from PIL import Image


def _pil(fmt: str, **kw) -> Callable[[np.ndarray], tuple[bytes, np.ndarray]]:
    def code(img: np.ndarray) -> tuple[bytes, np.ndarray]:
        buf, pil = io.BytesIO(), Image.fromarray(img)
        pil.save(buf, fmt, **kw)
        data = buf.getvalue()
        # WebP has no grey mode: it stores three equal channels, which Pillow decodes as RGB
        return data, np.asarray(Image.open(io.BytesIO(data)).convert(pil.mode))
    return code


def _imagecodecs(name: str, **kw) -> Callable[[np.ndarray], tuple[bytes, np.ndarray]]:
    import imagecodecs  # the benchmarks' extra (pyproject: bench)

    encode, decode = getattr(imagecodecs, f"{name}_encode"), getattr(imagecodecs, f"{name}_decode")

    def code(img: np.ndarray) -> tuple[bytes, np.ndarray]:
        data = bytes(encode(img, **kw))
        return data, np.asarray(decode(data))
    return code


#: name -> (library, a function making the coder; it may raise ImportError)
CODECS = {
    "png": ("Pillow/zlib", lambda: _pil("PNG", optimize=True)),
    "webp_lossless": ("Pillow/libwebp", lambda: _pil("WEBP", lossless=True, quality=100,
                                                      method=6)),
    "jpeg2000_lossless": ("Pillow/OpenJPEG", lambda: _pil("JPEG2000", irreversible=False)),
    "jpegxl_lossless": ("imagecodecs/libjxl", lambda: _imagecodecs("jpegxl", lossless=True,
                                                                   effort=9)),
    "jpegls": ("imagecodecs/CharLS", lambda: _imagecodecs("jpegls", level=0)),
    "avif_lossless": ("imagecodecs/libavif", lambda: _imagecodecs("avif", level=100, speed=0)),
}


def lossless_bits(images: np.ndarray) -> dict[str, dict]:
    """Per codec: bits/dim of ``images`` (uint8, (N, H, W) or (N, H, W, 3)) coded one file an
    image, how many of the N decode exactly, and the seconds spent; ``{"missing": reason}`` for
    a codec whose package or plugin is absent."""
    out = {}
    dims = images[0].size * len(images)
    for name, (library, make) in CODECS.items():
        try:
            code = make()
            code(images[0])
        except (ImportError, OSError, KeyError, ValueError, RuntimeError) as e:
            out[name] = dict(library=library, missing=f"{type(e).__name__}: {e}")
            continue
        t0, size, exact = time.perf_counter(), 0, 0
        for img in images:
            data, back = code(img)
            size += len(data)
            exact += int(back.shape == img.shape and np.array_equal(back, img))
        out[name] = dict(library=library, bpd=8 * size / dims, mean_bytes=size / len(images),
                         exact=exact, n=len(images), seconds=time.perf_counter() - t0)
    return out


def lossless_bpd(images: np.ndarray) -> dict[str, float | None]:
    """Bits/dim of each codec (``None`` where it is missing or not exact on these images)."""
    res = lossless_bits(images)
    return {k: v["bpd"] if v.get("exact") == len(images) else None for k, v in res.items()}


def library_versions() -> dict[str, str | None]:
    """The versions of the libraries behind the codecs (a codec's files change with them)."""
    from PIL import __version__ as pillow
    from PIL import features

    out = dict(pillow=pillow, zlib=features.version("zlib"), libwebp=features.version("webp"),
               openjpeg=features.version("jpg_2000"))
    try:
        import imagecodecs

        lib = imagecodecs.version(dict)
        out.update(imagecodecs=imagecodecs.__version__,
                   **{k: lib.get(k) for k in ("libjxl", "charls", "libavif")})
    except ImportError:
        out["imagecodecs"] = None
    return out


def main() -> None:
    from benchmarks._common import CODEC
    from wavar.data import datasets

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--n", type=int, default=None, help="the first N test images (default all)")
    args = ap.parse_args()
    x = datasets.load(args.dataset, "test").x
    x = x[: args.n] if args.n else x
    res = lossless_bits(x)
    for name, r in res.items():
        if "missing" in r:
            print(f"{name:18s} missing ({r['missing']})")
        else:
            print(f"{name:18s} {r['bpd']:6.3f} bits/dim  {r['mean_bytes']:8.1f} bytes  exact "
                  f"{r['exact']}/{r['n']}  {r['seconds']:.1f} s  ({r['library']})")
    n = len(x)
    path = CODEC / f"lossless_codecs_{args.dataset}_{n}.json"
    path.write_text(json.dumps(dict(
        command="PYTHONPATH=. python benchmarks/lossless_codecs.py --dataset "
                f"{args.dataset}" + (f" --n {args.n}" if args.n else ""),
        dataset=args.dataset, split="test", n=n, image_shape=list(x[0].shape),
        versions=library_versions(), codecs=res), indent=2) + "\n")
    print("->", path)


if __name__ == "__main__":
    main()
