"""A model folder's weights: one ``model.safetensors``, or shards beside an index.

Hugging Face's layout for a model too large for one file: ``model-00001-of-00003.safetensors``
... and ``model.safetensors.index.json`` (``{"metadata": {"total_size": bytes}, "weight_map":
{tensor name: shard file}}``). The zoo stores weights in git, where a file must stay under
20 MB, so a model past that (issue 19's 20-50M parameters are 40-100 MB in float16) is written
in shards (``WaveletGPT.save_pretrained(..., max_shard_mb=19)``). Every reader goes through
here: loading, the zoo's checksum, and the server's test of whether a folder holds a model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from wavar.atomic import write_atomic
from wavar.errors import CheckpointError

if TYPE_CHECKING:  # torch itself loads only with safetensors.torch, when tensors are read
    import torch

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


def present(folder: Path) -> bool:
    """Whether ``folder`` holds weights in either layout (not whether they are whole: reading
    them says that)."""
    return (Path(folder) / SINGLE).is_file() or (Path(folder) / INDEX).is_file()


def files(folder: Path) -> list[Path]:
    """The weight files of ``folder`` in a fixed order: ``[model.safetensors]``, or the index
    and then its shards in name order; ``[]`` where there are none. A shard the index names
    but the folder lacks is left in: :func:`load` and :func:`digest` say it is missing."""
    return _layout(folder)[1] if present(folder) else []


def _layout(folder: Path) -> tuple[dict[str, str] | None, list[Path]]:
    """The index's weight map (None for one file) and :func:`files`; no weights at all is a
    :class:`CheckpointError`."""
    folder = Path(folder)
    if (folder / SINGLE).is_file():
        return None, [folder / SINGLE]
    if (folder / INDEX).is_file():
        weight_map = _index(folder)
        return weight_map, [folder / INDEX] + [folder / s
                                               for s in sorted(set(weight_map.values()))]
    raise CheckpointError(f"{folder / SINGLE} is missing (and there is no {INDEX})")


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing ({INDEX} names it)")
    return path


def _index(folder: Path) -> dict[str, str]:
    """The index's weight map, checked: names are plain shard files of this folder."""
    path = folder / INDEX
    try:
        weight_map = json.loads(path.read_text())["weight_map"]
        ok = isinstance(weight_map, dict) and all(
            isinstance(v, str) and v.endswith(".safetensors") and Path(v).name == v
            for v in weight_map.values())
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is not a safetensors index: {e}") from e
    if not ok or not weight_map:
        raise CheckpointError(f"{path} is not a safetensors index (its weight_map must name "
                              "shard files of this folder)")
    return weight_map


def save(folder: Path, tensors: dict[str, torch.Tensor], max_shard_bytes: int | None = None
         ) -> list[Path]:
    """Write ``tensors`` as one file, or as shards of at most ``max_shard_bytes`` each (a tensor
    larger than that alone in its shard), each file whole or absent; the other layout's files
    left from an earlier save are removed. Returns the files written."""
    from safetensors.torch import save as save_bytes

    folder = Path(folder)
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    old = set(folder.glob("model-*-of-*.safetensors")) | {folder / INDEX, folder / SINGLE}
    if max_shard_bytes is None or total <= max_shard_bytes:
        groups = [dict(tensors)]
    else:
        groups, size = [{}], 0
        for name, t in tensors.items():  # in state-dict order: a layer's tensors stay together
            n = t.numel() * t.element_size()
            if groups[-1] and size + n > max_shard_bytes:
                groups.append({})
                size = 0
            groups[-1][name], size = t, size + n
    if len(groups) == 1:
        write_atomic(folder / SINGLE, lambda f: f.write(save_bytes(groups[0])))
        written = [folder / SINGLE]
    else:
        names = [f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))]
        for name, group in zip(names, groups, strict=True):
            write_atomic(folder / name, lambda f, g=group: f.write(save_bytes(g)))
        index = {"metadata": {"total_size": total},
                 "weight_map": {t: name for name, g in zip(names, groups, strict=True) for t in g}}
        text = json.dumps(index, indent=2) + "\n"
        write_atomic(folder / INDEX, lambda f: f.write(text.encode()))  # last: shards first
        written = [folder / INDEX] + [folder / n for n in names]
    for stale in old - set(written):
        stale.unlink(missing_ok=True)
    return written


def load(folder: Path) -> dict[str, torch.Tensor]:
    """All the tensors of ``folder``'s weights, on the CPU; a missing, truncated or corrupt file
    (or a shard that lacks a tensor its index gives it) is a :class:`CheckpointError` naming
    it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weight_map, found = _layout(folder)
    state: dict[str, torch.Tensor] = {}
    for path in found if weight_map is None else found[1:]:
        try:
            part = load_file(_existing(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path} is truncated or corrupted: {e}") from e
        if weight_map is not None:
            want = {k for k, v in weight_map.items() if v == path.name}
            if set(part) != want:
                raise CheckpointError(f"{path} does not hold the tensors {INDEX} gives it "
                                      f"(missing {sorted(want - set(part))[:3]}, extra "
                                      f"{sorted(set(part) - want)[:3]})")
        state.update(part)
    return state


def digest(folder: Path) -> str:
    """sha256 of the weight files' bytes, in :func:`files` order (for one file: that file's
    sha256, as ``sha256sum`` prints it)."""
    h = hashlib.sha256()
    for path in _layout(folder)[1]:
        h.update(_existing(path).read_bytes())
    return h.hexdigest()

