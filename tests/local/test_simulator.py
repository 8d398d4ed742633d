"""The APIFRAME simulator over real HTTP: what a client of the documented API would notice."""

from __future__ import annotations

import base64
import io
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from PIL import Image, ImageChops
from vary_region_local.simulator import ApiframeSimulator, SimulatorFaults

KEY = "test-key"
SIZE = (64, 64)
MASK_BOX = (16, 8, 40, 32)  # left, top, right, bottom of the white (redrawn) area


# ---- fixtures and helpers ------------------------------------------------------------------------
@pytest.fixture
def sim() -> Iterator[ApiframeSimulator]:
    simulator = ApiframeSimulator(api_key=KEY, step_delay=0.01, progress_steps=(25, 50, 75), image_size=SIZE)
    simulator.start()
    yield simulator
    simulator.stop()


class Receiver:
    """A webhook endpoint that records every call; `status` is what it answers."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.calls.append((dict(self.headers), json.loads(body)))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [body for _, body in self.calls]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    yield hook
    hook.server.shutdown()
    hook.server.server_close()


def mask_url(size: tuple[int, int] = SIZE, box: tuple[int, int, int, int] = MASK_BOX, fmt: str = "PNG") -> str:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    out = io.BytesIO()
    mask.save(out, format=fmt)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(out.getvalue()).decode()}"


def api(
    sim: ApiframeSimulator, path: str, body: dict[str, Any] | None = None, key: str | None = KEY, **kwargs: Any
) -> requests.Response:
    headers = {"Authorization": key} if key is not None else {}
    if body is None:
        return requests.get(sim.base_url + path, headers=headers, timeout=5, **kwargs)
    return requests.post(sim.base_url + path, json=body, headers=headers, timeout=kwargs.pop("timeout", 5), **kwargs)


def inpaint(sim: ApiframeSimulator, receiver: Receiver | None = None, **extra: Any) -> str:
    body = {"parent_task_id": "parent-1", "mask": mask_url(), "prompt": "a hot-air balloon", **extra}
    if receiver is not None:
        body |= {"webhook_url": receiver.url, "webhook_secret": "s3cret"}
    response = api(sim, "/inpaint", body)
    assert response.status_code == 200, response.text
    return str(response.json()["task_id"])


def finished(sim: ApiframeSimulator, receiver: Receiver | None = None, **extra: Any) -> dict[str, Any]:
    """Run one inpaint to the end and return what Fetch says about it."""
    task_id = inpaint(sim, receiver, **extra)
    assert sim.wait_idle(5)
    return dict(api(sim, "/fetch", {"task_id": task_id}).json())


def png(url: str) -> Image.Image:
    response = requests.get(url, timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/png"
    assert int(response.headers["Content-Length"]) == len(response.content)
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "PNG"
    return image.convert("RGB")


def differing_box(a: Image.Image, b: Image.Image) -> tuple[int, int, int, int] | None:
    return ImageChops.difference(a, b).getbbox()


# ---- auth and validation -------------------------------------------------------------------------
def test_a_missing_or_wrong_api_key_is_refused_with_an_empty_401(sim: ApiframeSimulator) -> None:
    for key in (None, "wrong", "Bearer wrong"):
        response = api(sim, "/inpaint", {"parent_task_id": "p", "mask": mask_url()}, key=key)
        assert (response.status_code, response.json()) == (401, {})
    assert api(sim, "/account", key=f"Bearer {KEY}").status_code == 200
    assert sim.stats()["inpaint_calls"] == 3 and sim.stats()["tasks_created"] == 0


@pytest.mark.parametrize(
    "body",
    [
        {"mask": "MASK"},
        {"parent_task_id": "p"},
        {"parent_task_id": "", "mask": "MASK"},
        {"parent_task_id": "p", "mask": "iVBORw0KGgo="},
        {"parent_task_id": "p", "mask": "data:image/png;base64,not*base64"},
        {"parent_task_id": "p", "mask": "data:image/png;base64," + base64.b64encode(b"not an image").decode()},
        {"parent_task_id": "p", "mask": "data:image/gif;base64,R0lGODlhAQABAAAAACw="},
        {"parent_task_id": "p", "mask": "MASK", "webhook_url": "ftp://example.com/hook"},
    ],
    ids=["no-parent", "no-mask", "empty-parent", "bare-base64", "bad-base64", "not-an-image", "gif", "bad-webhook-url"],
)
def test_an_invalid_inpaint_is_a_400_and_creates_no_task(sim: ApiframeSimulator, body: dict[str, Any]) -> None:
    body = {k: mask_url() if v == "MASK" else v for k, v in body.items()}
    response = api(sim, "/inpaint", body)
    assert response.status_code == 400
    assert response.json()["errors"][0]["msg"]
    assert sim.stats()["tasks_created"] == 0 and sim.inpaint_requests == []


def test_a_non_json_body_is_a_400_not_a_dead_server(sim: ApiframeSimulator) -> None:
    response = requests.post(sim.base_url + "/inpaint", data=b"{not json", headers={"Authorization": KEY})
    assert response.status_code == 400
    assert api(sim, "/account").status_code == 200


# ---- the happy path ------------------------------------------------------------------------------
def test_webhooks_report_string_percentages_then_the_documented_final_shape(
    sim: ApiframeSimulator, receiver: Receiver
) -> None:
    task_id = inpaint(sim, receiver)
    assert sim.wait_idle(5)
    bodies = receiver.bodies
    assert [(b["status"], b["percentage"]) for b in bodies[:3]] == [
        ("processing", "25"),
        ("processing", "50"),
        ("processing", "75"),
    ]
    final = bodies[3]
    assert len(bodies) == 4 and "status" not in final
    assert final["task_id"] == task_id and final["task_type"] == "inpaint"
    assert final["original_image_url"].endswith("/grid.png") and len(final["image_urls"]) == 4
    for headers, _ in receiver.calls:
        assert headers["x-webhook-secret"] == "s3cret"
        assert headers["Content-Type"] == "application/json"
    assert api(sim, "/fetch", {"task_id": task_id}).json() == final
    assert sim.stats() == {
        "inpaint_calls": 1,
        "imagine_calls": 0,
        "upscale_calls": 0,
        "tasks_created": 1,
        "fetch_calls": 1,
        "webhooks_sent": 4,
        "webhooks_failed": 0,
        "image_requests": 0,
        "running_tasks_peak": 1,
        "credits_spent": 4,
    }
    recorded = sim.inpaint_requests[0]
    assert recorded["parent_task_id"] == "parent-1" and recorded["mask"].startswith("data:image/png;base64,")
    assert sim.task(task_id)["mask_bytes"].startswith(b"\x89PNG")  # type: ignore[index]


def test_fetch_follows_a_task_from_pending_to_finished() -> None:
    with_delay = ApiframeSimulator(api_key=KEY, step_delay=0.3, progress_steps=(40,), image_size=SIZE)
    with_delay.start()
    try:
        task_id = inpaint(with_delay)

        def fetch() -> dict[str, Any]:
            return dict(api(with_delay, "/fetch", {"task_id": task_id}).json())

        assert fetch() == {"task_id": task_id, "task_type": "inpaint", "status": "pending"}
        while (view := fetch())["status"] == "pending":  # the first step takes 0.3 s
            time.sleep(0.02)
        assert view == {"task_id": task_id, "task_type": "inpaint", "status": "processing", "percentage": "40"}
        assert with_delay.wait_idle(5)
        assert len(fetch()["image_urls"]) == 4
    finally:
        with_delay.stop()


def test_fetch_of_an_unknown_task_is_404(sim: ApiframeSimulator) -> None:
    response = api(sim, "/fetch", {"task_id": "nope"})
    assert (response.status_code, response.json()) == (404, {"errors": [{"msg": "task not found"}]})


def test_variations_redraw_only_the_masked_pixels(sim: ApiframeSimulator) -> None:
    result = finished(sim)
    parent = png(f"{sim.base_url}/images/parent-1/parent.png")
    assert parent.size == SIZE
    variations = [png(url) for url in result["image_urls"]]
    for variation in variations:
        assert variation.size == SIZE
        assert differing_box(variation, parent) == MASK_BOX  # changed exactly inside, never outside
    assert len({v.tobytes() for v in variations}) == 4  # four distinct redraws


def test_a_mask_of_another_size_is_scaled_to_the_parent(sim: ApiframeSimulator) -> None:
    result = finished(sim, mask=mask_url(size=(32, 32), box=(0, 0, 16, 16), fmt="JPEG"))
    parent = Image.open(io.BytesIO(sim.parent_image_png("parent-1"))).convert("RGB")
    assert differing_box(png(result["image_urls"][0]), parent) == (0, 0, 32, 32)


@pytest.mark.parametrize("kind", ["inpaint", "imagine"])
def test_the_grid_is_a_2x2_composite_of_the_four_at_full_size(sim: ApiframeSimulator, kind: str) -> None:
    """As Midjourney's grid: twice the width and height of each variant, each quadrant that variant."""
    if kind == "inpaint":
        result = finished(sim)
    else:
        task_id = api(sim, "/imagine", {"prompt": "a lake", "aspect_ratio": "3:2"}).json()["task_id"]
        assert sim.wait_idle(5)
        result = api(sim, "/fetch", {"task_id": task_id}).json()
    grid = png(result["original_image_url"])
    variants = [png(url) for url in result["image_urls"]]
    width, height = variants[0].size
    assert all(variant.size == (width, height) for variant in variants)
    assert grid.size == (2 * width, 2 * height)
    quadrants = [grid.crop((x, y, x + width, y + height)) for y in (0, height) for x in (0, width)]
    assert [differing_box(quadrant, variant) for quadrant, variant in zip(quadrants, variants, strict=True)] == [
        None
    ] * 4


def test_parent_pictures_are_deterministic_per_id_and_served_for_any_id(sim: ApiframeSimulator) -> None:
    odd_id = "job 7/ü"
    served = requests.get(f"{sim.base_url}/images/{quote(odd_id, safe='')}/parent.png", timeout=5)
    assert served.content == sim.parent_image_png(odd_id)
    assert sim.parent_image_png("a") == sim.parent_image_png("a") != sim.parent_image_png("b")
    assert requests.get(f"{sim.base_url}/images/unknown/grid.png", timeout=5).status_code == 404


def test_any_parent_id_becomes_a_finished_upscale_but_a_grid_parent_is_refused(sim: ApiframeSimulator) -> None:
    finished(sim)
    parent = api(sim, "/fetch", {"task_id": "parent-1"}).json()
    assert parent["task_type"] == "upscale#1" and parent["image_url"].endswith("/parent-1/parent.png")
    grid_task = api(sim, "/imagine", {"prompt": "a lake"}).json()["task_id"]
    assert sim.wait_idle(5)
    response = api(sim, "/inpaint", {"parent_task_id": grid_task, "mask": mask_url()})
    assert response.status_code == 400 and "upscale" in response.json()["errors"][0]["msg"]


def test_imagine_then_upscale_then_inpaint(sim: ApiframeSimulator) -> None:
    imagine_id = api(sim, "/imagine", {"prompt": "mountains"}).json()["task_id"]
    assert sim.wait_idle(5)
    imagined = api(sim, "/fetch", {"task_id": imagine_id}).json()
    assert imagined["task_type"] == "imagine" and len(imagined["image_urls"]) == 4
    assert api(sim, "/upscale-1x", {"parent_task_id": imagine_id, "index": "5"}).status_code == 400
    upscale_id = api(sim, "/upscale-1x", {"parent_task_id": imagine_id, "index": "2"}).json()["task_id"]
    assert sim.wait_idle(5)
    upscaled = api(sim, "/fetch", {"task_id": upscale_id}).json()
    assert upscaled["task_type"] == "upscale#2" and png(upscaled["image_url"]).size == SIZE
    assert len(finished(sim, parent_task_id=upscale_id)["image_urls"]) == 4


def test_account_balance_falls_by_each_tasks_price_and_can_be_set_or_broken(sim: ApiframeSimulator) -> None:
    before = api(sim, "/account").json()
    finished(sim)  # an inpaint: 4 credits
    after = api(sim, "/account").json()
    assert before["plan"] == "simulator" and after["credits"] == before["credits"] - 4
    imagine_id = api(sim, "/imagine", {"prompt": "a lighthouse"}).json()["task_id"]
    assert sim.wait_idle(5)
    api(sim, "/upscale-1x", {"parent_task_id": imagine_id, "index": "1"})
    assert api(sim, "/account").json()["credits"] == after["credits"] - 4 - 2

    sim.set_faults(account_credits=3)
    assert api(sim, "/account").json()["credits"] == 0, "never below zero: 3 less the 10 spent"
    sim.set_faults(account_status=503)
    assert api(sim, "/account").status_code == 503
    with pytest.raises(ValueError, match="account_status"):
        sim.set_faults(account_status=42)


def test_fetch_many_accepts_2_to_20_ids_and_omits_unknown_ones(sim: ApiframeSimulator) -> None:
    task_id = inpaint(sim)
    assert api(sim, "/fetch-many", {"task_ids": [task_id]}).status_code == 400
    assert api(sim, "/fetch-many", {"task_ids": [task_id] * 21}).status_code == 400
    response = api(sim, "/fetch-many", {"task_ids": [task_id, "unknown"]})
    assert [task["task_id"] for task in response.json()["tasks"]] == [task_id]


def test_failed_webhook_deliveries_are_counted_and_not_retried(sim: ApiframeSimulator, receiver: Receiver) -> None:
    receiver.status = 500
    inpaint(sim, receiver)
    assert sim.wait_idle(5)
    assert len(receiver.calls) == 4
    assert sim.stats()["webhooks_failed"] == 4 and sim.stats()["webhooks_sent"] == 0
    inpaint(sim, webhook_url="http://127.0.0.1:9/nobody-listens")
    assert sim.wait_idle(5) and sim.stats()["webhooks_failed"] == 8
    # The webhook log keeps each answer, so a caller can tell which deliveries failed, and how.
    assert [entry.get("answer") for entry in sim.webhook_log] == [500] * 4 + ["ConnectionError"] * 4


# ---- faults --------------------------------------------------------------------------------------
def test_reject_inpaint(sim: ApiframeSimulator) -> None:
    sim.set_faults(reject_inpaint="Mask too small")
    response = api(sim, "/inpaint", {"parent_task_id": "p", "mask": mask_url()})
    assert (response.status_code, response.json()) == (400, {"errors": [{"msg": "Mask too small"}]})
    assert sim.stats()["tasks_created"] == 0


def test_rate_limit_next(sim: ApiframeSimulator) -> None:
    sim.set_faults(rate_limit_next=2)
    body = {"parent_task_id": "p", "mask": mask_url()}
    for _ in range(2):
        response = api(sim, "/inpaint", body)
        assert response.status_code == 429 and response.headers["Retry-After"] == "1"
        assert response.json() == {"message": "Too many requests"}
    assert api(sim, "/inpaint", body).status_code == 200
    assert sim.faults.rate_limit_next == 0
    assert sim.stats()["inpaint_calls"] == 3 and sim.stats()["tasks_created"] == 1


def test_server_error_next(sim: ApiframeSimulator) -> None:
    sim.set_faults(server_error_next=1)
    body = {"parent_task_id": "p", "mask": mask_url()}
    response = api(sim, "/inpaint", body)
    assert (response.status_code, response.json()) == (500, {})
    assert api(sim, "/inpaint", body).status_code == 200


def test_inpaint_response_delay_leaves_a_timed_out_client_with_a_real_task(sim: ApiframeSimulator) -> None:
    sim.set_faults(inpaint_response_delay=1.0)
    with pytest.raises(requests.Timeout):
        api(sim, "/inpaint", {"parent_task_id": "p", "mask": mask_url()}, timeout=0.25)
    assert sim.stats()["tasks_created"] == 1 and len(sim.inpaint_requests) == 1


@pytest.mark.parametrize("status", [None, 502])
def test_lose_answer_next_takes_the_task_and_loses_its_answer(sim: ApiframeSimulator, status: int | None) -> None:
    sim.set_faults(lose_answer_next=1, lose_answer_status=status)
    body = {"parent_task_id": "p", "mask": mask_url()}
    if status is None:
        with pytest.raises(requests.ConnectionError):  # the connection closes before any answer
            api(sim, "/inpaint", body)
    else:
        assert api(sim, "/inpaint", body).status_code == status
    assert (sim.stats()["tasks_created"], sim.stats()["credits_spent"]) == (1, 4), "taken and charged"
    assert api(sim, "/inpaint", body).status_code == 200, "only the next one"
    with pytest.raises(ValueError, match="5xx"):
        sim.set_faults(lose_answer_status=200)


def test_fail_task(sim: ApiframeSimulator, receiver: Receiver) -> None:
    sim.set_faults(fail_task="Job action restricted")
    result = finished(sim, receiver)
    assert result == {
        "task_id": result["task_id"],
        "task_type": "inpaint",
        "status": "failed",
        "message": "Job action restricted",
    }
    assert receiver.bodies[-1] == result
    assert requests.get(f"{sim.base_url}/images/{result['task_id']}/grid.png", timeout=5).status_code == 404


def test_finished_with_status(sim: ApiframeSimulator, receiver: Receiver) -> None:
    sim.set_faults(finished_with_status=True)
    result = finished(sim, receiver)
    assert result["status"] == "finished" and receiver.bodies[-1]["status"] == "finished"


def test_duplicate_webhooks(sim: ApiframeSimulator, receiver: Receiver) -> None:
    sim.set_faults(duplicate_webhooks=True)
    finished(sim, receiver)
    bodies = receiver.bodies
    assert len(bodies) == 8 and bodies[0::2] == bodies[1::2]


def test_reorder_webhooks_sends_a_stale_progress_after_the_final(sim: ApiframeSimulator, receiver: Receiver) -> None:
    sim.set_faults(reorder_webhooks=True)
    result = finished(sim, receiver)
    assert receiver.bodies[-2] == result
    assert receiver.bodies[-1] == {
        "task_id": result["task_id"],
        "task_type": "inpaint",
        "status": "processing",
        "percentage": "50",
    }


@pytest.mark.parametrize(("mode", "expected"), [("all", 0), ("final", 3)])
def test_drop_webhooks(sim: ApiframeSimulator, receiver: Receiver, mode: str, expected: int) -> None:
    sim.set_faults(drop_webhooks=mode)
    result = finished(sim, receiver)
    assert len(receiver.bodies) == expected and all(b.get("status") == "processing" for b in receiver.bodies)
    assert len(result["image_urls"]) == 4  # Fetch still recovers the result


def test_extra_fields(sim: ApiframeSimulator, receiver: Receiver) -> None:
    sim.set_faults(extra_fields=True)
    result = finished(sim, receiver)
    assert all("sim_note" in body and "actions" in body for body in receiver.bodies)
    assert "sim_note" in result and len(result["image_urls"]) == 4
    other = inpaint(sim)
    tasks = api(sim, "/fetch-many", {"task_ids": [result["task_id"], other]}).json()["tasks"]
    assert all("sim_note" in task for task in tasks)


def test_image_delay(sim: ApiframeSimulator) -> None:
    url = finished(sim)["original_image_url"]
    sim.set_faults(image_delay=0.3)
    started = time.monotonic()
    png(url)
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize("status", [404, 503])
def test_image_status(sim: ApiframeSimulator, status: int) -> None:
    url = finished(sim)["image_urls"][0]
    sim.set_faults(image_status=status)
    assert requests.get(url, timeout=5).status_code == status
    assert requests.get(f"{sim.base_url}/images/x/parent.png", timeout=5).status_code == status


def test_image_truncate_breaks_the_body_short(sim: ApiframeSimulator) -> None:
    url = finished(sim)["original_image_url"]
    sim.set_faults(image_truncate=True)
    received = bytearray()
    with requests.get(url, stream=True, timeout=5) as response:
        assert response.status_code == 200
        with pytest.raises(requests.exceptions.ChunkedEncodingError):  # requests' "connection broken"
            for chunk in response.iter_content(256):
                received += chunk
    assert 0 < len(received) < int(response.headers["Content-Length"])


def test_image_padding_bytes_grows_a_still_valid_png(sim: ApiframeSimulator) -> None:
    url = finished(sim)["image_urls"][0]
    plain = requests.get(url, timeout=5).content
    plain_parent = sim.parent_image_png("parent-1")
    sim.set_faults(image_padding_bytes=100_000)
    padded = requests.get(url, timeout=5).content
    padded_parent = requests.get(f"{sim.base_url}/images/parent-1/parent.png", timeout=5).content
    assert len(padded) == len(plain) + 100_000 and len(padded_parent) == len(plain_parent) + 100_000
    Image.open(io.BytesIO(padded)).verify()  # checks every chunk's CRC
    assert Image.open(io.BytesIO(padded)).tobytes() == Image.open(io.BytesIO(plain)).tobytes()


def test_image_bytes_per_second_throttles_the_body(sim: ApiframeSimulator) -> None:
    url = finished(sim)["image_urls"][0]
    sim.set_faults(image_padding_bytes=40_000, image_bytes_per_second=160_000)
    started = time.monotonic()
    body = requests.get(url, timeout=5).content
    elapsed = time.monotonic() - started
    assert elapsed >= len(body) / 160_000 * 0.8 and elapsed >= 0.2
    Image.open(io.BytesIO(body)).verify()


def test_faults_apply_to_tasks_created_after_they_are_set(sim: ApiframeSimulator, receiver: Receiver) -> None:
    before = inpaint(sim, receiver)
    sim.set_faults(fail_task="too late")
    assert sim.wait_idle(5)
    assert "image_urls" in api(sim, "/fetch", {"task_id": before}).json()


# ---- control surface -----------------------------------------------------------------------------
def test_control_endpoints_set_faults_report_stats_and_reset(sim: ApiframeSimulator) -> None:
    response = requests.post(f"{sim.base_url}/_sim/faults", json={"fail_task": "boom", "image_delay": 1}, timeout=5)
    assert response.status_code == 200
    assert response.json() == {**SimulatorFaults().__dict__, "fail_task": "boom", "image_delay": 1.0}
    assert sim.faults.fail_task == "boom"
    for bad in ({"no_such_fault": 1}, {"rate_limit_next": "3"}, {"drop_webhooks": "some"}, {"image_status": 42}):
        assert requests.post(f"{sim.base_url}/_sim/faults", json=bad, timeout=5).status_code == 400
    assert sim.faults.rate_limit_next == 0
    api(sim, "/account")
    api(sim, "/fetch", {"task_id": "x"})
    stats = requests.get(f"{sim.base_url}/_sim/stats", timeout=5).json()
    assert stats == sim.stats() and stats["fetch_calls"] == 1
    reset = requests.post(f"{sim.base_url}/_sim/reset", timeout=5).json()
    assert reset["faults"] == SimulatorFaults().__dict__ and set(reset["stats"].values()) == {0}
    assert sim.faults == SimulatorFaults()
    with pytest.raises(ValueError):
        sim.set_faults(drop_webhooks="sometimes")


def test_the_command_line_runs_until_ctrl_c() -> None:
    local = Path(__file__).resolve().parents[2] / "local"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vary_region_local.simulator",
            "--port",
            "0",
            "--api-key",
            "cli-key",
            "--fail-task",
            "--drop-webhooks",
            "final",
            "--image-size",
            "32x32",
        ],
        cwd=local,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        base_url = next(word for word in process.stdout.readline().split() if word.startswith("http://"))
        faults = requests.get(f"{base_url}/_sim/faults", timeout=5).json()
        assert faults["fail_task"] == "simulated task failure" and faults["drop_webhooks"] == "final"
        assert requests.get(f"{base_url}/account", headers={"Authorization": "cli-key"}, timeout=5).ok
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=5) == 0


# ---- the v2 dialect, as the provider's pages document it ------------------------------------------
V2_KEY = "afk_test-key"


@pytest.fixture
def sim2() -> Iterator[ApiframeSimulator]:
    simulator = ApiframeSimulator(
        api_key=V2_KEY, step_delay=0.01, progress_steps=(50,), image_size=SIZE, api_version="v2"
    )
    simulator.start()
    yield simulator
    simulator.stop()


def v2(
    sim: ApiframeSimulator, path: str, body: dict[str, Any] | None = None, key: str | None = None, **kwargs: Any
) -> requests.Response:
    headers = {"X-API-Key": V2_KEY} | ({"Idempotency-Key": key} if key else {})
    if body is None:
        return requests.get(sim.base_url + path, headers=headers, timeout=5)
    return requests.post(sim.base_url + path, json=body, headers=headers, timeout=5, **kwargs)


GENERATE = {"prompt": "a lighthouse", "model": "midjourney", "midjourneyParams": {"aspect_ratio": "16:9"}}


def test_v2_generate_is_at_the_documented_path_only_and_answers_202(sim2: ApiframeSimulator) -> None:
    response = v2(sim2, "/v2/images/generate", GENERATE | {"midjourneyParams": {"aspect_ratio": "1:2"}})
    assert response.status_code == 202
    assert response.json() == {"jobId": response.json()["jobId"], "status": "QUEUED"}
    assert v2(sim2, "/v2/images/midjourney/generate", GENERATE).status_code == 404, "not in the docs"
    assert sim2.stats()["tasks_created"] == 1
    assert sim2.wait_idle(5)
    job = v2(sim2, f"/v2/jobs/{response.json()['jobId']}").json()
    assert png(job["result"]["images"][0]).size == (32, 64), "midjourneyParams.aspect_ratio reaches the pictures"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"prompt": "a lighthouse", "aspectRatio": "16:9", "model": "midjourney"}, "aspectRatio"),
        ({"prompt": "a lighthouse"}, "model"),
        ({"prompt": "a lighthouse", "model": "flux-2-pro"}, "model"),
        ({"prompt": "", "model": "midjourney"}, "prompt"),
        ({"prompt": "x" * 2001, "model": "midjourney"}, "prompt"),
        (GENERATE | {"midjourneyParams": {"aspect_ratio": "wide"}}, "aspect_ratio"),
        (GENERATE | {"midjourneyParams": {"ar": "16:9"}}, "ar"),
        (GENERATE | {"webhookEvents": ["done"]}, "webhookEvents"),
    ],
)
def test_v2_refuses_request_fields_the_docs_do_not_name(
    sim2: ApiframeSimulator, body: dict[str, Any], why: str
) -> None:
    response = v2(sim2, "/v2/images/generate", body)
    assert response.status_code == 400 and why in response.json()["error"]["message"]
    upsample = {"parentJobId": "grid-1", "action": "upsample", "index": 1, "aspect_ratio": "1:1"}
    assert v2(sim2, "/v2/images/midjourney/action", upsample).status_code == 400
    assert sim2.stats()["tasks_created"] == 0


def test_v2_idempotency_key_same_key_same_job_charged_once(sim2: ApiframeSimulator) -> None:
    first = v2(sim2, "/v2/images/generate", GENERATE, key="key-1").json()["jobId"]
    again = v2(sim2, "/v2/images/generate", GENERATE, key="key-1")
    assert (again.status_code, again.json()["jobId"]) == (202, first)
    other = v2(sim2, "/v2/images/generate", GENERATE, key="key-2").json()["jobId"]
    keyless = {v2(sim2, "/v2/images/generate", GENERATE).json()["jobId"] for _ in range(2)}
    assert len({first, other, *keyless}) == 4
    stats = sim2.stats()
    assert (stats["imagine_calls"], stats["tasks_created"], stats["credits_spent"]) == (5, 4, 64)
    assert [r["idempotency_key"] for r in sim2.paid_requests] == ["key-1", "key-1", "key-2", None, None]


def test_v2_actions_do_not_honour_the_key_which_is_documented_on_generate_only(sim2: ApiframeSimulator) -> None:
    upsample = {"parentJobId": "grid-1", "action": "upsample", "index": 2}
    jobs = {v2(sim2, "/v2/images/midjourney/action", upsample, key="same").json()["jobId"] for _ in range(2)}
    assert len(jobs) == 2 and sim2.stats()["credits_spent"] == 8


@pytest.mark.parametrize("status", [None, 500, 504])
def test_v2_lost_answer_the_job_exists_and_the_same_key_finds_it(sim2: ApiframeSimulator, status: int | None) -> None:
    sim2.set_faults(lose_answer_next=1, lose_answer_status=status)
    if status is None:
        with pytest.raises(requests.ConnectionError):
            v2(sim2, "/v2/images/generate", GENERATE, key="lost-1")
    else:
        lost = v2(sim2, "/v2/images/generate", GENERATE, key="lost-1")
        assert lost.status_code == status and lost.json()["error"]["code"] == "server_error"
    made = sim2.paid_requests[0]["job_id"] or next(iter(sim2._tasks))
    assert sim2.task(made) is not None, "the job exists"

    resent = v2(sim2, "/v2/images/generate", GENERATE, key="lost-1")

    assert (resent.status_code, resent.json()["jobId"]) == (202, made)
    assert (sim2.stats()["tasks_created"], sim2.stats()["credits_spent"]) == (1, 16), "one job, charged once"


def test_v2_statuses_are_upper_case_or_with_the_switch_lower_case(sim2: ApiframeSimulator) -> None:
    job_id = v2(sim2, "/v2/images/generate", GENERATE).json()["jobId"]
    assert sim2.wait_idle(5)
    job = v2(sim2, f"/v2/jobs/{job_id}").json()
    assert job["status"] == "COMPLETED" and job["model"] == "midjourney" and job["creditCost"] == 16
    assert set(job["result"]) == {"images", "gridUrl"} and len(job["result"]["images"]) == 4
    assert job["error"] is None and "action" not in job, "the documented fields"
    sim2.set_faults(lowercase_statuses=True)
    assert v2(sim2, f"/v2/jobs/{job_id}").json()["status"] == "completed"
    queued = v2(sim2, "/v2/images/generate", GENERATE).json()
    assert queued["status"] == "queued"


def test_v2_string_result_is_one_url_the_grid_or_the_upsamples_image(sim2: ApiframeSimulator) -> None:
    sim2.set_faults(string_result=True)
    grid_job = v2(sim2, "/v2/images/generate", GENERATE).json()["jobId"]
    assert sim2.wait_idle(5)
    result = v2(sim2, f"/v2/jobs/{grid_job}").json()["result"]
    assert isinstance(result, str) and result.endswith("/grid.png")
    upsample = {"parentJobId": grid_job, "action": "upsample", "index": 3}
    upsampled = v2(sim2, "/v2/images/midjourney/action", upsample).json()["jobId"]
    assert sim2.wait_idle(5)
    image = v2(sim2, f"/v2/jobs/{upsampled}").json()["result"]
    assert isinstance(image, str)
    assert png(image).size == (png(result).width // 2, png(result).height // 2), "one quarter of its grid"


def test_v2_webhooks_are_the_documented_signed_events(sim2: ApiframeSimulator, receiver: Receiver) -> None:
    v2(sim2, "/v2/images/generate", GENERATE | {"webhookUrl": receiver.url})
    assert sim2.wait_idle(5)
    events = [(headers["X-Webhook-Event"], body) for headers, body in receiver.calls]
    assert [event for event, _ in events] == ["progress", "completed"]
    assert set(events[0][1]) == {"event", "jobId", "status", "progress", "model"}
    assert events[0][1]["status"] == "PROCESSING"
    final = events[1][1]
    assert set(final) == {"event", "jobId", "status", "progress", "result", "model", "creditCost", "completedAt"}
    assert final["status"] == "COMPLETED" and set(final["result"]) == {"images", "gridUrl"}
    assert all(headers["X-Webhook-Signature"].startswith("sha256=") for headers, _ in receiver.calls)
