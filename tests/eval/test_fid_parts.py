"""The FID network as fp16 parts: export, assemble, and the explicit opt-in to load it."""

import hashlib
import json

import numpy as np
import pytest
import torch

from tests.eval.test_fid import TinyNet
from wavar.errors import WavarError
from wavar.eval import fid as fidmod
from wavar.eval.fid_parts import assemble_network, export_network_fp16, read_origin


class Plain(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = TinyNet().body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.fixture
def scripted(tmp_path, monkeypatch):
    """A small TorchScript stand-in saved to a file that fid.py takes for the standard one."""
    path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(Plain()), str(path))
    monkeypatch.setattr(fidmod, "NETWORK_SHA1", hashlib.sha1(path.read_bytes()).hexdigest())
    monkeypatch.setattr(fidmod, "_networks", {})
    monkeypatch.delenv(fidmod.NETWORK_ENV, raising=False)
    return path


def test_round_trip_small(tmp_path, scripted, monkeypatch):
    out = tmp_path / "parts"
    manifest = export_network_fp16(3, out, source=scripted)
    assert manifest["parts"] == 3 and manifest["original_sha1"] == fidmod.NETWORK_SHA1
    assert {t["part"] for t in manifest["tensors"]} == {1, 2, 3}
    for k in (1, 2, 3):  # each folder travels alone, with the manifest
        assert (out / f"part{k}" / "manifest.json").is_file()
        assert (out / f"part{k}" / f"part-{k}-of-3.safetensors").is_file()
    assert (out / "part1" / "skeleton.pt").is_file()
    # the parts may arrive in another layout: found by name under the folder
    moved = tmp_path / "moved"
    for k in (1, 2, 3):
        dest = moved / f"call{k}" if k > 1 else moved / "x" / "part1"
        dest.parent.mkdir(parents=True, exist_ok=True)
        (out / f"part{k}").rename(dest)
    assembled = assemble_network(moved)
    assert read_origin(assembled)["original_sha1"] == fidmod.NETWORK_SHA1
    assert read_origin(scripted) is None
    ref = torch.jit.load(str(scripted)).eval()
    net = fidmod.load_network("cpu", assembled)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        a, b = net(x), ref(x)
    assert a.dtype == torch.float32 and float((a - b).norm() / b.norm()) < 1e-2
    # reports say which kind of network it was; only a named file is used
    assert fidmod.network_description() == fidmod.NETWORK_STANDARD
    assert fidmod.network_description(assembled) == fidmod.NETWORK_FP16
    monkeypatch.setenv(fidmod.NETWORK_ENV, str(assembled))
    assert fidmod.network_description() == fidmod.NETWORK_FP16
    assert fidmod.network_description(scripted) == fidmod.NETWORK_STANDARD


def test_bad_parts_and_files(tmp_path, scripted):
    out = tmp_path / "parts"
    export_network_fp16(2, out, source=scripted)
    (out / "part2" / "part-2-of-2.safetensors").unlink()
    with pytest.raises(WavarError, match="missing"):
        assemble_network(out)
    export_network_fp16(2, out, source=scripted)
    blob = out / "part2" / "part-2-of-2.safetensors"
    blob.write_bytes(blob.read_bytes()[:-10])
    with pytest.raises(WavarError, match="sha1"):
        assemble_network(out)
    with pytest.raises(WavarError, match="parts must be"):
        export_network_fp16(0, out, source=scripted)
    other = tmp_path / "other.pt"
    other.write_bytes(b"not a network")
    with pytest.raises(WavarError, match="neither"):
        fidmod.network_file(other)
    with pytest.raises(WavarError, match="sha1"):
        export_network_fp16(2, out, source=other)
    with pytest.raises(WavarError, match="does not exist"):
        fidmod.network_file(tmp_path / "missing.pt")


def test_real_network_fp16(tmp_path, monkeypatch):
    """The Inception network itself, if cached here: fp16 parts change features by < 1%."""
    path = fidmod.network_path()
    if not path.is_file():
        pytest.skip(f"the FID network is not cached at {path}")
    monkeypatch.setattr(fidmod, "_networks", {})
    manifest = export_network_fp16(3, tmp_path / "parts")
    sizes = [e["bytes"] for e in manifest["part_files"]]
    assert max(sizes) < 16 * 2**20 and len(manifest["tensors"]) == 376
    assembled = assemble_network(tmp_path / "parts")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    ref = fidmod.inception_features(images, network=fidmod.load_network("cpu"))
    got = fidmod.inception_features(images, network=fidmod.load_network("cpu", assembled))
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-2
    assert json.loads((tmp_path / "parts" / "part1" / "manifest.json").read_text())["parts"] == 3
