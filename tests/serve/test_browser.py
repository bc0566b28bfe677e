"""The page in a real headless Chromium (Debian's package, driven by Playwright): sample,
watch the frames arrive while the model samples, upload an image, slide over its tokens,
paint a mask, complete it.

Needs the ``chromium`` command (``make chromium`` installs it); without it this test fails
rather than skips, so CI cannot pass without running it. ``WAVAR_SERVE_SCREENSHOT=PATH``
also writes the final screenshot there (the README's ``docs/serve.png``).
"""

import os
import shutil

import pytest
from PIL import Image

pytestmark = pytest.mark.slow


def chromium_path() -> str:
    path = os.environ.get("WAVAR_CHROMIUM") or shutil.which("chromium")
    if not path:
        pytest.fail("the browser test needs Debian's chromium: run `make chromium` as root "
                    "(apt-get install -y chromium), or point WAVAR_CHROMIUM at a Chromium")
    return path


@pytest.fixture(scope="module")
def page(live_server):
    try:
        from playwright.sync_api import sync_playwright
    except ModuleNotFoundError:
        pytest.fail("the browser test needs playwright: pip install -e '.[serve]'")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True)
        page = browser.new_page(viewport={"width": 1100, "height": 760})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(live_server.url)
        yield page
        browser.close()
        assert not errors, errors


def run_and_wait(page, button: str, timeout_s: float = 60) -> None:
    """Click ``button`` and wait until that generation has been drawn to the end."""
    runs = int(page.get_attribute("body", "data-runs"))
    page.click(button)
    page.wait_for_function(f"Number(document.body.dataset.runs) > {runs}",
                           timeout=timeout_s * 1000)
    assert page.get_attribute("body", "data-run") == "done", page.inner_text("#status")


def canvases_not_blank(page, selector: str) -> list[bool]:
    return page.eval_on_selector_all(selector, """cs => cs.map(c => {
        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let lo = 255, hi = 0;
        for (let i = 0; i < d.length; i += 4) { lo = Math.min(lo, d[i]); hi = Math.max(hi, d[i]); }
        return hi > lo;
    })""")


def sampling_fields(page) -> list[str]:
    return [page.input_value(f"#{i}") for i in ("cfg", "temperature", "top-p")]


def test_sample_upload_slide_and_complete_a_region(page, tmp_path):
    # a model's recommended sampling fills the fields (per-plane values comma-separated); one
    # that names none gets plain sampling; a field that is no list of numbers is refused
    page.select_option("#model", "tiny")
    assert sampling_fields(page) == ["1,2", "1", "0.9"]
    assert "recommends" in page.inner_text("#sampling-hint")
    page.select_option("#model", "mnist-small")
    assert sampling_fields(page) == ["1", "1", ""]
    assert "recommends" not in page.inner_text("#sampling-hint")
    page.fill("#cfg", "1,,2")
    page.click("#sample")
    assert "guidance (cfg): a number" in page.inner_text("#status")
    page.fill("#cfg", "1")
    # sample two images of one class: coarse frames first, the final one last, not blank
    page.click("#classes-none")
    page.check("#classes input[value='3']")
    page.fill("#n", "2")
    page.fill("#seed", "0")
    # three planes (of 4-5): live frames cost a sampler call per plane, each stepping the planes
    # before it again; three keep the test about as long as one call for every plane
    page.click("summary:has-text('Budget')")
    page.fill("#max-plane", "3")
    run_and_wait(page, "#sample")
    log = page.evaluate("window.wavarLog")
    frames = [e for e in log if e["event"] == "frame"]
    drawn = [e for e in log if e["event"] == "drawn"]
    assert len(frames) == 3 and [f["index"] for f in frames] == list(range(len(frames)))
    assert not frames[0]["final"] and frames[-1]["final"]
    assert [e["event"] for e in log].index("done") > log.index(frames[-1])
    assert [d["index"] for d in drawn] == [f["index"] for f in frames]
    assert drawn[0]["t"] < drawn[-1]["t"]  # the coarse frame was on screen before the final
    # live: a sampler call per plane, and the first frame was here (the browser's clock)
    # before the server (the same machine's clock) began the last call
    (done,) = [e for e in log if e["event"] == "done"]
    assert [f["stage"] for f in frames] == list(range(1, len(frames) + 1))
    assert frames[0]["wall"] / 1000 < done["started_at"] + done["stage_starts"][-1]
    assert canvases_not_blank(page, "#images canvas") == [True, True]
    assert page.locator("#images .tile a[href$='.wvr']").count() == 2

    # download the first image's PNG and upload it: its progressive decode, then the slider
    # moves to fewer tokens
    png = page.request.get(page.eval_on_selector("#images .tile a[href$='0.png']",
                                                 "a => a.href"))
    assert png.ok and png.headers["content-type"] == "image/png"
    path = tmp_path / "upload.png"
    path.write_bytes(png.body())
    assert Image.open(path).size == (28, 28)
    page.set_input_files("#upload-file", str(path))
    total = page.wait_for_function(
        "() => { const r = document.getElementById('slider-readout');"
        " return r.dataset.tokens && r.dataset.tokens === document.getElementById('slider').max"
        " && Number(r.dataset.tokens); }").json_value()
    k = total // 3
    page.eval_on_selector("#slider", f"s => {{ s.value = {k}; "
                                     "s.dispatchEvent(new Event('input')); }")
    page.wait_for_function(f"document.getElementById('slider-readout').dataset.tokens === '{k}'")
    readout = page.inner_text("#slider-readout")
    assert f"{k} / {total:,} tokens" in readout and "bits" in readout and "PSNR" in readout
    assert canvases_not_blank(page, "#upload-decoded") == [True]
    # the prefix as a compressed file: the link the page offers gives a .wvc of k tokens
    from wavar.compress import read_header

    wvc = page.request.get(page.eval_on_selector("#upload-links a[href*='prefix.wvc']",
                                                 "a => a.href"))
    assert wvc.ok and read_header(wvc.body())["n_tokens"] == k

    # paint the left half as kept, then let the model invent the rest
    page.locator("#mask-canvas").scroll_into_view_if_needed()
    box = page.locator("#mask-canvas").bounding_box()
    page.eval_on_selector("#brush", "b => { b.value = 8; }")
    for x in (0.1, 0.3, 0.45):  # three strokes top to bottom over the left half
        page.mouse.move(box["x"] + box["width"] * x, box["y"] + 2)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * x, box["y"] + box["height"] - 2, steps=8)
        page.mouse.up()
    kept = page.evaluate("window.wavar.mask.flat().reduce((a, b) => a + b, 0)")
    assert 28 * 8 < kept < 28 * 20
    run_and_wait(page, "#complete-region")
    assert canvases_not_blank(page, "#images canvas") == [True, True]
    assert "images in" in page.inner_text("#status")

    shot = tmp_path / "serve.png"
    page.screenshot(path=str(shot), full_page=True)
    if target := os.environ.get("WAVAR_SERVE_SCREENSHOT"):
        # a 256-colour palette keeps the committed PNG small
        Image.open(shot).convert("RGB").quantize(256).save(target, optimize=True)
