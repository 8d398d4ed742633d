"""`vary-region editor` in a real browser: Debian's chromium, headless, driven by Playwright (the
system browser, never a downloaded one), against the local stack started as a user starts it.

The user loads a parent task, paints a stroke, draws a rectangle, erases two bites out of it, undoes
the last one, and submits: the job's mask.png in the bucket must be those shapes at the parent's
natural size, strictly black and white, and the job must complete with its four variants shown.

A missing chromium FAILS this test (CI installs it: .ci/run). Only VARY_REGION_NO_BROWSER=1 skips
it, for a machine that says so.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageDraw
from vary_region_local.stack import SIMULATOR_API_KEY

from tests.e2e.conftest import Aws, StackProcess, user_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCREENSHOT_VARIABLE = "VARY_REGION_EDITOR_SCREENSHOT"
URL_LINE = re.compile(r"(http://127\.0\.0\.1:\d+/[A-Za-z0-9_-]+/)")
PARENT = "e2e-editor-parent"
BRUSH = 40
# Image coordinates (the simulator's parents are 512x512): what the user does, and the mask it makes.
STROKE = ((60, 80), (220, 100))
RECT = ((250, 250), (450, 400))
ERASE_KEPT = ((270, 300), (340, 300))  # erased, and stays erased
ERASE_UNDONE = ((400, 370), (440, 370))  # erased, then undone


def browser_path() -> str:
    if os.environ.get("VARY_REGION_NO_BROWSER") == "1":
        pytest.skip("VARY_REGION_NO_BROWSER=1: this machine has no browser for the editor's test")
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed (apt-get install -y chromium); set VARY_REGION_NO_BROWSER=1 to skip")
    return path


@dataclass
class Editor:
    process: subprocess.Popen[str]
    url: str
    stdout: list[str]


@contextmanager
def running_editor(local_stack: StackProcess | None, tmp_path: Path, *source: str) -> Iterator[Editor]:
    """`vary-region editor SOURCE --no-browser` as a user runs it; its URL read from its stderr."""
    home = tmp_path / "home"
    home.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "vary_region_cli.main"]
    if local_stack is not None:
        command += ["--stack-file", str(local_stack.stack_file)]
    process = subprocess.Popen(
        [*command, "editor", *source, "--no-browser", "--out", str(tmp_path / "saved")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=user_env(home),
        cwd=tmp_path,
    )
    found: list[str] = []
    stdout: list[str] = []
    threading.Thread(target=lambda: stdout.extend(process.stdout or []), daemon=True).start()

    def read_url() -> None:
        for line in process.stderr or []:
            match = URL_LINE.search(line)
            if match:
                found.append(match.group(1))
                return

    reader = threading.Thread(target=read_url, daemon=True)
    reader.start()
    reader.join(30)
    try:
        if not found:
            pytest.fail(f"the editor printed no URL (exit {process.poll()})")
        yield Editor(process, found[0], stdout)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


@pytest.fixture()
def editor(local_stack: StackProcess, tmp_path: Path) -> Iterator[Editor]:
    with running_editor(local_stack, tmp_path, "--parent", PARENT) as started:
        yield started


def drag(page: Any, points: tuple[tuple[int, int], ...]) -> None:
    first, *rest = [page.evaluate(f"vrEditor.screenPoint({x}, {y})") for x, y in points]
    page.mouse.move(first["x"], first["y"])
    page.mouse.down()
    for point in rest:
        page.mouse.move(point["x"], point["y"], steps=12)
    page.mouse.up()


def expected_mask(size: tuple[int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)

    def capsule(points: tuple[tuple[int, int], ...], fill: int) -> None:
        draw.line(points, fill=fill, width=BRUSH)
        for x, y in points:
            draw.ellipse((x - BRUSH / 2, y - BRUSH / 2, x + BRUSH / 2, y + BRUSH / 2), fill=fill)

    capsule(STROKE, 255)
    draw.rectangle((*RECT[0], RECT[1][0] - 1, RECT[1][1] - 1), fill=255)
    capsule(ERASE_KEPT, 0)
    return mask


def open_editor_page(playwright: Any, url: str) -> tuple[Any, Any, list[str]]:
    """Chromium on the editor's page once it is ready, and the page's uncaught errors as they come."""
    browser = playwright.chromium.launch(executable_path=browser_path())
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]", timeout=15_000)
    return browser, page, errors


def test_paint_erase_undo_submit_in_chromium(editor: Editor, aws: Aws, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    with sync_playwright() as playwright:
        browser, page, errors = open_editor_page(playwright, editor.url)
        assert page.input_value("#parent_task_id") == PARENT

        page.keyboard.press("b")
        drag(page, STROKE)
        page.keyboard.press("r")
        drag(page, RECT)
        page.keyboard.press("e")
        drag(page, ERASE_KEPT)
        drag(page, ERASE_UNDONE)
        page.keyboard.press("Control+z")
        page.fill("#prompt", "a hot air balloon")

        page.click("#submit")
        page.wait_for_selector("#progress:not([hidden]) #job-name:not(:empty)", timeout=15_000)
        job_id = page.inner_text("#job-name")
        mask_png = aws.s3.get_object(Bucket=aws.bucket, Key=f"inbox/{job_id}/mask.png")["Body"].read()
        page.wait_for_selector("body[data-job-status=COMPLETED]", timeout=60_000)
        # Polled from here: wait_for_function evaluates its string with eval, which the page's CSP forbids.
        shown = "[...document.querySelectorAll('[data-variant]')].every(img => img.complete && img.naturalWidth > 0)"
        deadline = time.monotonic() + 15
        while not page.evaluate(shown):
            assert time.monotonic() < deadline, "the four variants are not shown"
            page.wait_for_timeout(100)
        # The variants strip took height from the stage: its canvas must be redrawn at its new size,
        # not its old bitmap stretched into the new box (the parent would look distorted).
        redrawn = (
            "(() => { const v = document.getElementById('view'); const b = v.getBoundingClientRect();"
            " const r = window.devicePixelRatio || 1;"
            " return [v.width, v.height, Math.round(b.width * r), Math.round(b.height * r)]; })()"
        )
        deadline = time.monotonic() + 5
        while (sizes := page.evaluate(redrawn))[:2] != sizes[2:] and time.monotonic() < deadline:
            page.wait_for_timeout(100)
        assert sizes[:2] == sizes[2:], f"the canvas's bitmap {sizes[:2]} is stretched into its box {sizes[2:]}"
        assert errors == []
        if os.environ.get(SCREENSHOT_VARIABLE):  # `make editor-screenshot`: the docs' picture of the page
            page.screenshot(path=os.environ[SCREENSHOT_VARIABLE])
        page.click("#done")  # the page says done: the server stops, the command exits 0
        assert editor.process.wait(10) == 0
        browser.close()
    took = time.monotonic() - started
    print(f"browser test: {took:.1f}s")

    mask = Image.open(io.BytesIO(mask_png))
    assert mask.size == (512, 512)  # the parent's natural size, whatever the page's zoom
    assert set(mask.convert("L").getdata()) == {0, 255}  # strictly black and white
    expected = expected_mask(mask.size)
    differing = ImageChops.difference(mask.convert("L"), expected).histogram()[1:]
    white = expected.histogram()[255]
    # Only the shapes' edges may differ (the brush's round ends, a pixel's rounding of the pointer).
    assert sum(differing) < white * 0.03, f"{sum(differing)} pixels differ from the expected shapes ({white} white)"
    for point, value in (
        ((140, 90), 255),  # the stroke
        ((420, 280), 255),  # the rectangle
        ((305, 300), 0),  # the bite that stayed erased
        ((420, 370), 255),  # the bite that was undone
        ((100, 400), 0),  # never painted
    ):
        assert mask.getpixel(point) == value, point

    item = aws.table.get_item(Key={"job_id": job_id}, ConsistentRead=True)["Item"]
    assert item["status"] == "COMPLETED"
    assert item["parent_task_id"] == PARENT
    spec = aws.s3.get_object(Bucket=aws.bucket, Key=f"inbox/{job_id}/job.json")["Body"].read()
    assert b'"prompt": "a hot air balloon"' in spec
    assert _printed(editor, job_id)  # the job id on the command's stdout, as `submit` prints it


def _printed(editor: Editor, job_id: str) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if job_id in "".join(editor.stdout):
            return True
        time.sleep(0.1)
    return False


def call(editor: Editor, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(editor.url + path, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_a_finished_jobs_variant_is_edited_and_chained(
    editor: Editor, local_stack: StackProcess, aws: Aws, tmp_path: Path
) -> None:
    """--job ID --image N: the page shows variant N; the next job upscales it (index N of the
    job's task) and inpaints the upscale. The page is told no secret of the stack."""
    first = _submit_through(editor, {"prompt": "a kite"})
    finished = _wait_final(aws, first)
    assert finished["status"] == "COMPLETED"
    variant = aws.s3.get_object(Bucket=aws.bucket, Key=f"results/{first}/2.png")["Body"].read()

    with running_editor(local_stack, tmp_path / "next", "--job", first, "--image", "2") as chained:
        status, session = call(chained, "GET", "api/session")
        described = json.loads(session)
        assert status == 200
        assert (described["parent_task_id"], described["index"]) == (finished["task_id"], "2")
        assert call(chained, "GET", "api/parent") == (200, variant)
        pages = b"".join(call(chained, "GET", name)[1] for name in ("", "editor.js", "api/session"))
        assert SIMULATOR_API_KEY.encode() not in pages and b"testing" not in pages  # the key, the AWS keys
        second = _submit_through(chained, {"prompt": "a second kite"})

    spec = json.loads(aws.s3.get_object(Bucket=aws.bucket, Key=f"inbox/{second}/job.json")["Body"].read())
    assert spec == {"parent_task_id": finished["task_id"], "prompt": "a second kite", "index": "2"}
    ended = _wait_final(aws, second)
    assert ended["status"] == "COMPLETED" and ended.get("upscale_task_id"), ended.get("error")


def _submit_through(editor: Editor, fields: dict[str, str]) -> str:
    status, session = call(editor, "GET", "api/session")
    size = tuple(json.loads(session)[side] for side in ("width", "height"))
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle((size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2), fill=255)
    out = io.BytesIO()
    mask.save(out, "PNG")
    body = fields | {"mask": "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()}
    status, answer = call(editor, "POST", "api/submit", body)
    assert status == 200, answer
    return str(json.loads(answer)["job_id"])


def _wait_final(aws: Aws, job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = aws.table.get_item(Key={"job_id": job_id}, ConsistentRead=True).get("Item")
        if item and item["status"] in ("COMPLETED", "FAILED", "REJECTED"):
            return dict(item)
        time.sleep(0.3)
    pytest.fail(f"job {job_id} did not end within {timeout}s")


# --- every other tool, on a local file (no stack: Save only) ----------------------------------------


def test_every_tool_and_the_refusals_in_chromium(tmp_path: Path) -> None:
    picture = tmp_path / "picture.png"
    Image.new("RGB", (640, 480), (40, 90, 160)).save(picture)
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    with running_editor(None, tmp_path, "--file", str(picture)) as editor, sync_playwright() as playwright:
        browser, page, errors = open_editor_page(playwright, editor.url)
        assert page.is_disabled("#submit") and page.is_enabled("#save")  # no stack: Save only

        def painted(x: int, y: int) -> bool:
            alpha = page.evaluate(f"vrEditor.state.mask.getContext('2d').getImageData({x}, {y}, 1, 1).data[3]")
            return bool(alpha >= 128)

        def click(x: int, y: int) -> None:
            point = page.evaluate(f"vrEditor.screenPoint({x}, {y})")
            page.mouse.click(point["x"], point["y"])

        page.keyboard.press("o")
        drag(page, ((50, 50), (150, 130)))
        assert painted(100, 90) and not painted(52, 52)  # inside the ellipse; its bounding box's corner is not
        page.keyboard.press("l")
        drag(page, ((300, 50), (400, 50), (350, 150)))  # freehand lasso
        assert painted(350, 80) and not painted(310, 140)
        for corner in ((450, 300), (550, 300), (550, 400), (450, 400)):
            click(*corner)  # polygon, one corner per click
        page.keyboard.press("Enter")
        assert painted(500, 350) and not painted(440, 350)

        box = page.locator("#view").bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.wheel(0, -300)  # zoom in at the pointer
        assert page.inner_text("#zoom") != "100%"
        page.keyboard.down(" ")
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] / 2 + 60, box["y"] + box["height"] / 2 + 40, steps=5)
        page.mouse.up()
        page.keyboard.up(" ")
        page.keyboard.press("r")
        drag(page, ((200, 250), (260, 290)))  # drawn zoomed and panned: still lands where the picture is
        assert painted(230, 270) and not painted(270, 270)
        page.keyboard.press("0")

        page.keyboard.press("i")
        assert not painted(230, 270) and painted(10, 470)  # inverted
        page.keyboard.press("Control+z")
        assert painted(230, 270) and not painted(10, 470)
        page.keyboard.press("Control+Shift+z")
        assert not painted(230, 270)  # redone
        page.keyboard.press("i")
        assert painted(230, 270) and not painted(10, 470)

        size = int(page.inner_text("#size-out"))
        page.keyboard.press("]")
        assert int(page.inner_text("#size-out")) > size
        page.keyboard.press("[")
        page.keyboard.press("[")
        assert int(page.inner_text("#size-out")) < size

        page.click("#save")  # a local file: its upscale task must be named first
        page.wait_for_selector(".error[data-field=parent_task_id]:has-text('PARENT_MISSING')")
        page.fill("#parent_task_id", "task-from-a-file")
        page.fill("#prompt", "a\u0007kite")
        page.press("#prompt", "Tab")  # a changed field is checked at once, before any Save
        page.wait_for_selector(".error[data-field=prompt]:has-text('PROMPT_CONTROL_CHARACTERS')")
        page.fill("#prompt", "")
        page.press("#prompt", "Tab")
        page.wait_for_selector(".error[data-field=prompt]", state="hidden")
        page.click("#clear")
        page.click("#save")
        page.wait_for_selector(".error[data-field=mask]:has-text('MASK_BLANK')")
        assert "paint the region" in page.inner_text(".error[data-field=mask]")
        page.keyboard.press("Control+z")  # the shapes are back
        page.fill("#metadata", "{")
        page.click("#save")
        page.wait_for_selector(".error[data-field=metadata]:has-text('METADATA_INVALID')")
        page.fill("#metadata", '{"customer": "acme"}')
        page.click("#save")
        try:
            page.wait_for_selector("#message:has-text('saved')")
        except PlaywrightTimeout:  # seen once in CI's v2 pass under load: say what the page showed instead
            shown = page.evaluate(
                "[...document.querySelectorAll('#message, .error')].map(e => e.id + ':' + e.textContent).join(' | ')"
            )
            raise AssertionError(f"the page did not say saved; it shows: {shown}; page errors: {errors}") from None
        assert errors == []
        browser.close()

    saved = tmp_path / "saved"
    job = json.loads((saved / "job.json").read_text())
    assert job == {"parent_task_id": "task-from-a-file", "metadata": {"customer": "acme"}}
    mask = Image.open(saved / "mask.png")
    assert mask.size == (640, 480) and set(mask.histogram()[1:255]) == {0}
    assert [mask.getpixel(p) for p in ((100, 90), (350, 80), (500, 350), (230, 270), (10, 470))] == [255] * 4 + [0]


def test_a_parent_image_off_the_allowed_hosts_is_never_read(
    local_stack: StackProcess, run_cli: Any, tmp_path: Path
) -> None:
    """The allowlist is the stack's own: its APIFRAME origin. Reached as localhost, Fetch answers
    image URLs on 127.0.0.1, another origin: the editor refuses them as the pipeline would."""
    info = json.loads(local_stack.stack_file.read_text())
    info["apiframe_base_url"] = info["apiframe_base_url"].replace("127.0.0.1", "localhost")
    stack_file = tmp_path / "stack.json"
    stack_file.write_text(json.dumps(info))
    refused = run_cli("--stack-file", str(stack_file), "editor", "--parent", PARENT, "--no-browser", local=False)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "not in the allowed list" in refused.stderr and "PARENT_IMAGE_UNREADABLE" in refused.stderr
    assert "mask editor for" not in refused.stderr  # no page was served
