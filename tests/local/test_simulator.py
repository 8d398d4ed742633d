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


def test_the_grid_is_the_four_variations_at_half_size(sim: ApiframeSimulator) -> None:
    result = finished(sim)
    grid = png(result["original_image_url"])
    assert grid.size == SIZE
    halves = [png(url).resize((32, 32), Image.Resampling.LANCZOS) for url in result["image_urls"]]
    quadrants = [grid.crop((x, y, x + 32, y + 32)) for y in (0, 32) for x in (0, 32)]
    for index, quadrant in enumerate(quadrants):
        distances = [sum(ImageChops.difference(quadrant, half).convert("L").tobytes()) for half in halves]
        assert distances.index(min(distances)) == index


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
