"""The FID network in fp16 parts, for machines reached only through small file transfers.

The Inception network ``default_1.pt`` (:mod:`wavar.eval.fid`) is an 87 MB TorchScript archive
of 376 fp32 tensors. Where files travel in bounded portions (a GPU machine without network
access, fed by calls that each carry a few tens of MiB), :func:`export_network_fp16` writes it
as

* ``skeleton.pt``: the TorchScript archive with every parameter emptied (the code and the
  module structure, about 100 kB);
* ``part-K-of-N.safetensors``: the parameters rounded to fp16, split in ``N`` parts of about
  equal size (each a subset of the tensors, whole);
* ``manifest.json``: per tensor its name, shape and part, the sha1 of each part and of the
  skeleton, and the sha1 of the original fp32 file (:data:`wavar.eval.fid.NETWORK_SHA1`);

each part in its own folder ``partK/`` (the first also holding the skeleton; every one a copy of
the manifest), so each folder can be carried by a separate transfer. :func:`assemble_network`
finds the parts under a folder, checks them against the manifest, upcasts the tensors to fp32
into the skeleton and saves a TorchScript file that records its origin. Such a file is accepted
by :func:`wavar.eval.fid.load_network` only when asked for by name (``$WAVAR_FID_NETWORK`` or
``wavar eval --fid-network``), and reports made with it say ``"fp16-stored (development)"``:
fp16 weights move Inception features by about 0.4% (relative L2), so FIDs from it are close to,
but not, the standard numbers.

Examples
--------
::

    python -m benchmarks.fid_parts export --parts 3 --out /tmp/fid16   # where the net is cached
    python -m benchmarks.fid_parts assemble /tmp/fid16                  # on the other machine
    WAVAR_FID_NETWORK=/tmp/fid16/default_1_fp16.pt wavar eval ... --fid
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import safetensors.torch as st
import torch

from wavar.atomic import write_atomic
from wavar.errors import WavarError
from wavar.eval import fid
from wavar.eval.fid import EXTRA_FILE, read_origin  # the reader of what assemble writes

__all__ = ["ASSEMBLED_NAME", "EXTRA_FILE", "assemble_network", "export_network_fp16",
           "read_origin"]

MANIFEST = "manifest.json"
SKELETON = "skeleton.pt"
#: File name of the assembled network inside the parts folder.
ASSEMBLED_NAME = "default_1_fp16.pt"
_FORMAT = "wavar-fid-fp16-parts"
_VERSION = 1


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _split(sizes: list[int], parts: int) -> list[int]:
    """Part index of each tensor (in order): contiguous runs of about equal byte counts."""
    total, out, acc = sum(sizes), [], 0
    for s in sizes:
        # the part whose share of the total the tensor's midpoint falls in
        out.append(min(parts - 1, int((acc + s / 2) * parts / total)))
        acc += s
    return out


def export_network_fp16(parts: int, out_dir: str | Path, source: str | Path | None = None) -> dict:
    """Write the Inception network as fp16 parts (see the module docstring).

    Parameters
    ----------
    parts : int
        Number of parts (>= 1); each holds about ``43.6 MB / parts`` of fp16 weights.
    out_dir : str or Path
        Folder to write ``part1/ .. partN/`` into (created).
    source : str or Path, optional
        The fp32 ``default_1.pt``; default the cached one (:func:`wavar.eval.fid.fetch_network`).

    Returns
    -------
    dict
        The manifest.

    Raises
    ------
    WavarError
        If ``parts`` < 1, or the source file is not the standard network (sha1).
    """
    if parts < 1:
        raise WavarError(f"parts must be >= 1, got {parts}")
    # fid.NETWORK_SHA1 is looked up at call time, not bound at import: tests patch it there
    path = Path(source) if source is not None else fid.fetch_network()
    data = path.read_bytes()
    if _sha1(data) != fid.NETWORK_SHA1:
        raise WavarError(f"{path} has sha1 {_sha1(data)}, not the FID network's "
                         f"{fid.NETWORK_SHA1}")
    net = torch.jit.load(io.BytesIO(data), map_location="cpu")
    named = [(k, p.detach().clone()) for k, p in net.named_parameters()]
    if len(named) != len(net.state_dict()):
        raise WavarError(f"{path}: the network holds buffers besides its parameters; "
                         "this exporter handles parameters only")
    which = _split([p.numel() for _, p in named], parts)
    for _, p in net.named_parameters():
        p.data = torch.empty(0)  # the skeleton: code and structure, no weights
    buf = io.BytesIO()
    torch.jit.save(net, buf)
    skeleton = buf.getvalue()

    out = Path(out_dir)
    blobs = []
    for k in range(parts):
        tensors = {n: p.half().contiguous() for (n, p), w in zip(named, which, strict=True)
                   if w == k}
        blobs.append(st.save(tensors, metadata={"format": _FORMAT, "part": str(k + 1)}))
    manifest = {
        "format": _FORMAT, "version": _VERSION, "original_sha1": fid.NETWORK_SHA1,
        "original_bytes": len(data), "storage": "float16", "parts": parts,
        "skeleton": {"file": f"part1/{SKELETON}", "sha1": _sha1(skeleton)},
        "part_files": [{"file": f"part{k + 1}/part-{k + 1}-of-{parts}.safetensors",
                        "sha1": _sha1(b), "bytes": len(b)} for k, b in enumerate(blobs)],
        "tensors": [{"name": n, "shape": list(p.shape), "part": w + 1}
                    for (n, p), w in zip(named, which, strict=True)],
    }
    text = json.dumps(manifest, indent=1) + "\n"
    for k, blob in enumerate(blobs):
        folder = out / f"part{k + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        (out / manifest["part_files"][k]["file"]).write_bytes(blob)
        (folder / MANIFEST).write_text(text)
    (out / manifest["skeleton"]["file"]).write_bytes(skeleton)
    return manifest


def _find(root: Path, rel: str) -> Path:
    """``root/rel``, or the file of that name anywhere under ``root`` (parts may be moved)."""
    if (root / rel).is_file():
        return root / rel
    hits = sorted(root.rglob(Path(rel).name))
    if not hits:
        raise WavarError(f"{Path(rel).name} is missing under {root}: carry every part folder")
    return hits[0]


def assemble_network(part_dir: str | Path, out: str | Path | None = None) -> Path:
    """Rebuild a loadable Inception network (fp32 TorchScript) from the parts under a folder.

    Parameters
    ----------
    part_dir : str or Path
        A folder holding (anywhere beneath it) the manifest, the skeleton and every part that
        :func:`export_network_fp16` wrote.
    out : str or Path, optional
        Where to write the network; default ``part_dir/default_1_fp16.pt``.

    Returns
    -------
    Path
        The assembled network, for ``$WAVAR_FID_NETWORK`` or ``wavar eval --fid-network``.

    Raises
    ------
    WavarError
        If a part is missing or does not match the manifest.
    """
    root = Path(part_dir)
    manifests = sorted(root.rglob(MANIFEST))
    if not manifests:
        raise WavarError(f"no {MANIFEST} under {root}")
    manifest = json.loads(manifests[0].read_text())
    if manifest.get("format") != _FORMAT or manifest.get("version", 0) > _VERSION:
        raise WavarError(f"{manifests[0]} is not a manifest of FID network parts")

    def checked(entry: dict) -> bytes:
        path = _find(root, entry["file"])
        data = path.read_bytes()
        if _sha1(data) != entry["sha1"]:
            raise WavarError(f"{path} has sha1 {_sha1(data)}, the manifest says {entry['sha1']} "
                             "(a part of another export, or truncated)")
        return data

    tensors: dict[str, torch.Tensor] = {}
    for entry in manifest["part_files"]:
        tensors.update(st.load(checked(entry)))
    net = torch.jit.load(io.BytesIO(checked(manifest["skeleton"])), map_location="cpu")
    params = dict(net.named_parameters())
    names = [t["name"] for t in manifest["tensors"]]
    if set(names) != set(params) or set(names) != set(tensors):
        raise WavarError(f"the parts under {root} do not hold the skeleton's parameters")
    for t in manifest["tensors"]:
        v = tensors[t["name"]]
        if list(v.shape) != t["shape"]:
            raise WavarError(f"tensor {t['name']} has shape {list(v.shape)}, the manifest says "
                             f"{t['shape']}")
        params[t["name"]].data = v.float()  # upcast: the network computes in fp32
    origin = {"format": _FORMAT, "original_sha1": manifest["original_sha1"],
              "storage": manifest["storage"]}
    path = Path(out) if out is not None else root / ASSEMBLED_NAME
    write_atomic(path, lambda f: torch.jit.save(net, f,
                                                _extra_files={EXTRA_FILE: json.dumps(origin)}))
    return path
