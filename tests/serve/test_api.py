"""The API of ``wavar serve``: every endpoint, and bad input answered with a 4xx and a message."""

import json
import struct
import threading
import zlib

import numpy as np
import pytest

from tests.conftest import smooth_image
from tests.serve.conftest import FAST, SHAPE, Gate, data_url_image, png_file, save_tiny_model
from wavar.codec import CodedImage, WaveletCodec
from wavar.serve import Settings, create_app

pytest.importorskip("fastapi", reason="wavar serve needs the serve extra: pip install -e .[serve]")
pytest.importorskip("httpx", reason="the API tests use FastAPI's TestClient (httpx)")
from fastapi.testclient import TestClient  # noqa: E402


@pytest.fixture(scope="module")
def client(model_root):
    app = create_app(Settings(models=("tiny",), model_root=model_root))
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def sampled(client):
    """One finished generation: two images of class a."""
    r = client.post("/api/generate", json={"model": "tiny", "classes": ["a"], "n": 2, "seed": 3,
                                           **FAST})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def uploaded(client):
    img = smooth_image(np.random.default_rng(0), 40, 50, 3)
    r = client.post("/api/uploads", files={"file": ("photo.png", png_file(img), "image/png")},
                    data={"model": "tiny", "class": "b"})
    assert r.status_code == 200, r.text
    return r.json()


def events_of(text: str) -> list[tuple[str, dict]]:
    out = []
    for chunk in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.split("\n"))
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_page_models_and_health(client):
    page = client.get("/")
    assert page.status_code == 200 and "<title>wavar" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert "/api/generate" in client.get("/api/openapi.json").json()["paths"]
    models = client.get("/api/models").json()
    (tiny,) = models["models"]
    assert tiny["name"] == "tiny" and tiny["classes"] == ["a", "b", "c"]
    assert tiny["image_shape"] == [*SHAPE, 1]
    assert tiny["sampling"] == {"cfg": [1.0, 2.0], "top_p": 0.9}  # the model's recommendation
    assert models["limits"]["max_images"] == 64
    assert client.get("/api/health").json()["status"] == "ok"


def test_a_model_folder_in_shards_is_offered_and_samples(tmp_path):
    """Weights past the shard size (the zoo's layout for models over 20 MB a file) are a model
    folder like any other under --model-root."""
    from wavar.model import weights
    from wavar.model.transformer import WaveletGPT

    model = WaveletGPT.from_pretrained(save_tiny_model(tmp_path / "one"))
    model.save_pretrained(tmp_path / "root" / "sharded", max_shard_mb=0.01)
    assert len(weights.files(tmp_path / "root" / "sharded")) > 2  # the index and 2+ shards
    broken = tmp_path / "root" / "broken"  # a damaged index: listed, and refused when used
    broken.mkdir()
    (broken / "config.json").write_bytes((tmp_path / "one" / "tiny" / "config.json").read_bytes())
    (broken / weights.INDEX).write_text("{not json")
    with TestClient(create_app(Settings(model_root=tmp_path / "root"))) as c:
        names = [m["name"] for m in c.get("/api/models").json()["models"]]
        assert "sharded" in names and "broken" in names
        r = c.post("/api/generate", json={"model": "sharded", "classes": ["a"], "seed": 0,
                                          **FAST})
        assert r.status_code == 200, r.text
        r = c.post("/api/generate", json={"model": "broken", "classes": ["a"], "seed": 0})
        assert r.status_code == 500 and "not a safetensors index" in r.json()["error"]


def test_generate_answers_frames_coarse_to_fine(sampled):
    assert sampled["classes"] == ["a", "a"] and sampled["images"] == 2
    frames = sampled["frames"]
    assert len(frames) == FAST["max_plane"] and frames[-1]["final"] and not frames[0]["final"]
    tokens = np.array([f["tokens"] for f in frames])
    bits = np.array([f["bits"] for f in frames])
    assert (np.diff(tokens, axis=0) > 0).all() and (np.diff(bits, axis=0) > 0).all()
    assert tokens[-1].tolist() == sampled["tokens"] and bits[-1].tolist() == sampled["bits"]
    img = data_url_image(frames[-1]["images"][0])
    assert img.shape == SHAPE and img.dtype == np.uint8
    # live: one sampler call per plane, each frame sent before the next call began
    assert [f["stage"] for f in frames] == [1, 2, 3] and sampled["stages"] == 3
    starts = sampled["stage_starts"]
    assert all(f["seconds"] <= t for f, t in zip(frames, starts[1:], strict=False))


def test_generate_streams_events_in_order(client):
    r = client.post("/api/generate?stream=true",
                    json={"model": "tiny", "classes": ["b", "c"], "n": 1, "seed": 3, **FAST})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = events_of(r.text)
    kinds = [k for k, _ in events]
    assert kinds[:2] == ["queued", "started"] and kinds[-1] == "done"
    frames = [d for k, d in events if k == "frame"]
    assert [f["index"] for f in frames] == list(range(len(frames))) and frames[-1]["final"]
    assert set(kinds[2:-1]) <= {"progress", "frame"}
    assert events[-1][1]["classes"] == ["b", "c"]


def test_result_downloads(client, sampled):
    base = f"/api/results/{sampled['result']}"
    for name, kind in [("grid.png", "image/png"), ("grid.gif", "image/gif"),
                       ("1.png", "image/png"), ("1.gif", "image/gif")]:
        r = client.get(f"{base}/{name}")
        assert r.status_code == 200 and r.headers["content-type"] == kind, name
        assert "attachment" in r.headers["content-disposition"]
    r = client.get(f"{base}/0.wvr")
    seq = CodedImage.from_bytes(r.content)
    assert len(seq) == sampled["tokens"][0]
    png = client.get(f"{base}/0.png").content
    assert png == client.get(f"{base}/0.png?scale=1").content
    decoded = WaveletCodec.from_header(seq.header).decode(seq)
    assert np.array_equal(decoded, data_url_image(sampled["frames"][-1]["images"][0]))


def test_upload_slider_and_downloads(client, uploaded, model_root):
    assert uploaded["original"] == {"height": 40, "width": 50}
    assert (uploaded["height"], uploaded["width"]) == SHAPE and uploaded["class"] == "b"
    ends = uploaded["plane_ends"]
    assert ends[-1] == uploaded["tokens"] and ends == sorted(ends)
    base = f"/api/uploads/{uploaded['upload']}"
    frames = [client.get(f"{base}/frame?tokens={k}").json() for k in (0, ends[0], 10**6)]
    assert [f["tokens"] for f in frames] == [0, ends[0], uploaded["tokens"]]
    assert frames[0]["bits"] == 0 < frames[1]["bits"] < frames[2]["bits"]
    assert frames[2]["bits"] == pytest.approx(uploaded["bits"], abs=0.1)
    assert frames[0]["psnr"] < frames[2]["psnr"]
    assert data_url_image(frames[1]["image"]).shape == SHAPE
    seq = CodedImage.from_bytes(client.get(f"{base}/prefix.wvr?tokens={ends[0]}").content)
    assert len(seq) == ends[0]
    # the same prefix as a real compressed file: it decodes to the frame the slider shows
    from wavar.compress import decompress, read_header
    from wavar.model.transformer import WaveletGPT

    r = client.get(f"{base}/prefix.wvc?tokens={ends[0]}")
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    head = read_header(r.content)
    assert head["n_tokens"] == ends[0] and head["model"] == ""  # not a zoo model: no name
    model = WaveletGPT.from_pretrained(model_root / "tiny")
    assert np.array_equal(decompress(r.content, model), data_url_image(frames[1]["image"]))
    whole = read_header(client.get(f"{base}/prefix.wvc").content)
    assert whole["n_tokens"] == uploaded["tokens"] and whole["label"] == 1  # class b
    assert client.get(f"{base}/prefix.wvc?tokens=-1").status_code == 422
    assert client.get("/api/uploads/nope/prefix.wvc").status_code == 404
    r = client.get(f"{base}/image.png?tokens=5&scale=2")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"


def test_a_server_without_the_range_coder_says_so(client, uploaded, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "constriction", None)  # as if not installed
    r = client.get(f"/api/uploads/{uploaded['upload']}/prefix.wvc?tokens=3")
    assert r.status_code == 501 and "constriction" in r.json()["error"]


def test_prefix_and_region_completion(client, uploaded):
    body = {"model": "tiny", "classes": ["a"], "n": 2, "seed": 0, "upload": uploaded["upload"]}
    r = client.post("/api/generate", json={**body, "keep_planes": 1})
    assert r.status_code == 200, r.text
    done = r.json()
    kept, *sampled = done["frames"]  # the kept plane is a frame before any sampling
    assert kept["label"].endswith("(kept)") and kept["stage"] == 0
    assert kept["tokens"] == [uploaded["plane_ends"][0]] * 2
    assert [f["stage"] for f in sampled] == list(range(1, len(sampled) + 1))
    ours = CodedImage.from_bytes(
        client.get(f"/api/uploads/{uploaded['upload']}/prefix.wvr").content)
    k = uploaded["plane_ends"][0]
    for i in range(2):  # every completion starts with the upload's first plane
        seq = CodedImage.from_bytes(client.get(f"/api/results/{done['result']}/{i}.wvr").content)
        assert np.array_equal(seq.tokens[:k], ours.tokens[:k])
    mask = [[1] * 4 + [0] * 4 for _ in range(8)]
    r = client.post("/api/generate", json={**body, "mask": mask, **FAST})
    assert r.status_code == 200 and r.json()["images"] == 2, r.text


def test_frames_after_sampling_when_not_live(model_root):
    """(``--no-live-frames``: one sampler call, then the frames cut from its sequences.)"""
    app = create_app(Settings(models=("tiny",), model_root=model_root, live_frames=False))
    with TestClient(app) as c:
        assert c.get("/api/models").json()["limits"]["live_frames"] is False
        r = c.post("/api/generate", json={"model": "tiny", "classes": ["a"], "n": 2, "seed": 3,
                                          **FAST})
    assert r.status_code == 200, r.text
    done = r.json()
    frames = done["frames"]
    assert len(frames) == FAST["max_plane"] and done["stages"] == 1
    assert {f["stage"] for f in frames} == {1} and frames[-1]["final"]
    assert frames[-1]["tokens"] == done["tokens"]


def generate_error(client, body, status, words):
    r = client.post("/api/generate", json=body)
    assert r.status_code == status, r.text
    message = r.json()["error"]
    assert all(w in message for w in words), message


@pytest.mark.parametrize("body, status, words", [
    ({"model": "nope"}, 404, ["unknown model 'nope'", "tiny"]),
    ({"model": "../../etc/passwd"}, 400, ["not a model name", "no paths"]),
    ({"model": "/tmp"}, 400, ["not a model name"]),
    ({"model": "tiny", "n": 0}, 422, ["n:", "greater than or equal to 1"]),
    ({"model": "tiny", "n": 65}, 422, ["n:", "less than or equal to 64"]),
    ({"model": "tiny", "n": "lots"}, 422, ["n:", "integer"]),
    ({"model": "tiny", "n": 30, "classes": "all"}, 400, ["90 images", "at most 64"]),
    ({"model": "tiny", "classes": ["zebra"]}, 400, ["unknown class 'zebra'", "0=a"]),
    ({"model": "tiny", "classes": []}, 400, ["at least one class"]),
    ({"model": "tiny", "temperature": 0}, 422, ["temperature"]),
    ({"model": "tiny", "temperature": [1, 0]}, 422, ["temperature"]),
    ({"model": "tiny", "cfg": []}, 422, ["cfg", "at least 1"]),
    ({"model": "tiny", "top_p": [0.9, 1.5]}, 422, ["top_p", "less than or equal to 1"]),
    ({"model": "tiny", "colour": "red"}, 422, ["colour", "not permitted"]),
    ({"model": "tiny", "upload": "missing"}, 404, ["no upload 'missing'"]),
    ({"model": "tiny", "keep_planes": 2}, 400, ["need an uploaded image"]),
])
def test_generate_refuses_bad_requests(client, body, status, words):
    generate_error(client, body, status, words)


def test_a_generation_beyond_the_servers_memory_gets_503(client, monkeypatch):
    from wavar.sample import planning

    monkeypatch.setattr(planning, "free_memory", lambda device: 1)  # no cache fits
    generate_error(client, {"model": "tiny", "classes": ["a"], "n": 2, **FAST}, 503,
                   ["2 images in one generation", "0 images a call"])


def test_per_plane_sampling(client):
    """cfg, temperature and top_p take one value per bit-plane, as `wavar sample` does."""
    def final(**settings):
        r = client.post("/api/generate", json={"model": "tiny", "classes": ["a"], "seed": 5,
                                               **FAST, **settings})
        assert r.status_code == 200, r.text
        return r.json()["frames"][-1]["images"]

    assert final(cfg=[2, 2]) == final(cfg=2)  # one value throughout is that value
    assert final(temperature=[1, 0.5], top_p=[1, 0.8]) != final()
    # without a seed a request may share a batch: its per-plane settings are part of the key
    r = client.post("/api/generate", json={"model": "tiny", "classes": ["b"], "cfg": [1, 2],
                                           **FAST})
    assert r.status_code == 200, r.text


def test_completion_refuses_bad_conditions(client, uploaded):
    body = {"model": "tiny", "classes": ["a"], "upload": uploaded["upload"]}
    generate_error(client, {**body, "keep_planes": 1, "mask": [[1]]}, 400, ["not both"])
    generate_error(client, {**body, "mask": [[1, 0]]}, 400, ["mask is 1x2", "8x8"])
    generate_error(client, {**body, "keep_planes": 40}, 400, ["keep_planes=40", "bit-planes"])


def test_bad_bodies_and_paths(client, sampled, uploaded):
    r = client.post("/api/generate", content=b"{not json", headers={"content-type":
                                                                     "application/json"})
    assert r.status_code == 422 and "JSON" in r.json()["error"]
    r = client.post("/api/generate", content=iter([b'{"model": ', b'"nope"}']),
                    headers={"content-type": "application/json"})  # chunked, under the limit
    assert r.status_code == 404 and "nope" in r.json()["error"]
    for url, status in [(f"/api/results/{sampled['result']}/..%2F..%2Fpyproject.toml", 404),
                        ("/api/results/nope/0.png", 404),
                        (f"/api/results/{sampled['result']}/9.png", 404),
                        (f"/api/results/{sampled['result']}/grid.wvr", 404),
                        ("/static/../pyproject.toml", 404), ("/static/%2e%2e/pyproject.toml", 404),
                        (f"/api/uploads/{uploaded['upload']}/frame?tokens=-1", 422),
                        ("/api/nothing", 404)]:
        r = client.get(url)
        assert r.status_code == status, url
        assert r.json()["error"], url


def upload(client, data: bytes, name="x.png", **form):
    return client.post("/api/uploads", files={"file": (name, data, "image/png")},
                       data={"model": "tiny", **form})


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares a size and holds no pixels (a decompression bomb's opening)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_uploads_refuse_bad_files(client):
    ok = png_file(np.zeros((8, 8), np.uint8))
    cases = [
        (upload(client, b"%PDF-1.4 not an image", "doc.pdf"), 415, "not an image"),
        (upload(client, b""), 400, "empty"),
        (upload(client, png_file(np.zeros((4, 1025), np.uint8))), 413, "1025x4"),
        (upload(client, png_header(100_000, 100_000)), 413, "huge"),
        (upload(client, b"\0" * (4 * 2**20 + 1)), 413, "4 MB"),
        (upload(client, b"\0" * (5 * 2**20)), 413, "limit"),
        (client.post("/api/uploads", content=(b"\0" * 2**20 for _ in range(6)),
                     headers={"content-type": "multipart/form-data; boundary=x"}), 413,
         "a request body over the limit"),  # chunked: no length given, cut while read
        (upload(client, ok, model="nope"), 404, "unknown model"),
        (upload(client, ok, model="../tiny"), 400, "not a model name"),
        (upload(client, ok, **{"class": "zebra"}), 400, "unknown class"),
        (client.post("/api/uploads", data={"model": "tiny"}), 422, "file"),
    ]
    for r, status, words in cases:
        assert r.status_code == status, (status, r.text)
        assert words in r.json()["error"], r.json()


def test_raster_models_refuse_wvr_and_completion(tmp_path):
    """(A raster model has no planes and no .wvr; the page hides those, the API says why.)"""
    from wavar.model.transformer import WaveletGPT, config_from_preset

    cfg = config_from_preset("tiny", num_classes=2, max_seq_len=64, vocab_size=256, n_channels=1)
    cfg.codec = {"language": "raster", "image_shape": [4, 4], "classes": ["x", "y"],
                 "m_tilde_min": 0, "m_tilde_hist": [[1], [1]]}
    WaveletGPT(cfg).save_pretrained(tmp_path / "pixels")
    with TestClient(create_app(Settings(model_root=tmp_path, models=("pixels",)))) as c:
        r = c.post("/api/generate", json={"model": "pixels", "classes": ["x"], "seed": 0})
        assert r.status_code == 200, r.text
        frames = r.json()["frames"]  # a stage per token budget
        assert [f["tokens"][0] for f in frames] == [1, 2, 3, 4, 7, 10, 16]
        assert [f["stage"] for f in frames] == list(range(1, 8)) and frames[-1]["final"]
        assert c.get(f"/api/results/{r.json()['result']}/0.gif").status_code == 200
        r = c.get(f"/api/results/{r.json()['result']}/0.wvr")
        assert r.status_code == 400 and "raster" in r.json()["error"]
        up = upload(c, png_file(np.zeros((4, 4), np.uint8)), model="pixels").json()
        from wavar.compress import read_header

        r = c.get(f"/api/uploads/{up['upload']}/prefix.wvc?tokens=5")  # the first 5 pixels
        assert r.status_code == 200 and read_header(r.content)["n_tokens"] == 5
        generate_error(c, {"model": "pixels", "upload": up["upload"], "keep_planes": 0}, 400,
                       ["raster"])
        # the sampler's own check, answered as a 400 like every input error it finds
        generate_error(c, {"model": "pixels", "cfg": [1, 2]}, 400,
                       ["per bit-plane needs a wavelet-language model", "give one value"])


def test_full_queue_gets_429_and_slow_requests_504(model_root):
    # the waiting request must still be live when the third one comes: a busy machine can
    # take a while between them, hence 2.5 s rather than less
    app = create_app(Settings(models=("tiny",), model_root=model_root, queue_size=1,
                              timeout_s=2.5))
    with TestClient(app) as c, Gate(app.state.worker) as gate:
        body = {"model": "tiny", "classes": ["a"], **FAST}
        answers = {}

        def ask(key):
            answers[key] = c.post("/api/generate", json=body)

        first = threading.Thread(target=ask, args=("first",))
        first.start()
        gate.wait_until(running=1, waiting=0)  # held by the gate
        second = threading.Thread(target=ask, args=("second",))
        second.start()
        gate.wait_until(running=1, waiting=1)  # the queue is full
        r = c.post("/api/generate", json=body)
        assert r.status_code == 429 and "busy" in r.json()["error"]
        first.join(30)
        second.join(30)
        gate.open.set()
        for key in ("first", "second"):
            assert answers[key].status_code == 504, answers[key].text
            assert "limit of 2.5 s" in answers[key].json()["error"]
