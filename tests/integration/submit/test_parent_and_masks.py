"""Given a job whose parent or mask is checked before paying, when it runs through the local stack, then
every unusable parent or mask is REJECTED with its code and nothing paid, a running parent makes the
job wait and then submit once, and the mask APIFRAME receives is strictly black and white at the
parent's real (non-square) size, read from the parent's first bytes only."""

from __future__ import annotations

import base64
import io
import json
import uuid
from typing import Any

import pytest
from PIL import Image
from vary_region.provider.webhook_token import webhook_token

from tests.support.builders import hook_of, job_json, mask_png, new_job_id, put_files
from tests.support.waits import (
    job_item,
    keys_under,
    settle_stack,
    wait_for_job,
    wait_for_object,
    wait_for_queue_drained,
    wait_for_upload_outcome,
)

PARENT_SIZE = (640, 384)


@pytest.fixture()
def wide_parents(stack, sim, monkeypatch):
    """Parents first drawn during the test are 640x384 (every id below is fresh, so none is cached)."""
    settle_stack(stack, sim)
    monkeypatch.setattr(sim, "image_size", PARENT_SIZE)


def parent_id(prefix: str = "wide") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def upload(s3, bucket, job_id: str, spec: bytes, mask: bytes | None = None, mask_name: str = "mask.png"):
    files: list[tuple[str, bytes, str | None]] = []
    if mask is not None:
        files.append((f"inbox/{job_id}/{mask_name}", mask, None))
    files.append((f"inbox/{job_id}/job.json", spec, "application/json"))
    return files, put_files(s3, bucket, files)


def sent_mask(sim, job_id: str) -> Image.Image:
    """The mask of the one /inpaint request this job made, decoded."""
    suffix = "/" + webhook_token(job_id)
    bodies = [r for r in list(sim.inpaint_requests) if hook_of(r).endswith(suffix)]
    assert len(bodies) == 1, f"{len(bodies)} /inpaint requests for {job_id}"
    header, _, encoded = bodies[0]["mask"].partition(",")
    assert header == "data:image/png;base64"
    image = Image.open(io.BytesIO(base64.b64decode(encoded)))
    assert image.format == "PNG"
    return image


def assert_binary_at_parent_size(image: Image.Image) -> Image.Image:
    assert image.size == PARENT_SIZE
    grey = image.convert("L")
    assert set(grey.getdata()) == {0, 255}, "the mask sent must be strictly black and white"
    return grey


def png(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def regions_spec(parent: str, mask: dict[str, Any], **extra: Any) -> bytes:
    return job_json(parent_task_id=parent, mask=mask, **extra)


# ---- rejections: nothing paid, error.json written, the files untouched --------------------------------
REJECTIONS = {
    "unknown-parent": ("PARENT_NOT_FOUND", lambda: (job_json(parent_task_id=parent_id("missing")), mask_png())),
    "grid-parent": ("PARENT_IS_GRID", lambda: (job_json(parent_task_id=parent_id("grid")), mask_png())),
    "failed-parent": ("PARENT_FAILED", lambda: (job_json(parent_task_id=parent_id("failed")), mask_png())),
    "mask-of-another-size": ("MASK_SIZE_MISMATCH", lambda: (job_json(parent_task_id=parent_id()), mask_png())),
    "region-outside-the-parent": (
        "MASK_REGIONS_INVALID",
        lambda: (regions_spec(parent_id(), {"regions": [{"rect": [600, 0, 41, 10]}]}), None),
    ),
    "polygon-of-two-points": (
        "MASK_REGIONS_INVALID",
        lambda: (regions_spec(parent_id(), {"regions": [{"polygon": [[0, 0], [5, 5]]}]}), None),
    ),
    # Fractions without "units": "fraction" would be paid for as a one-pixel mask.
    "fractions-given-as-pixels": (
        "MASK_REGIONS_TOO_SMALL",
        lambda: (regions_spec(parent_id(), {"regions": [{"rect": [0.3, 0.1, 0.4, 0.5]}]}), None),
    ),
    "region-under-a-thousandth-of-the-parent": (  # 225 of 640x384 pixels: 0.09 %
        "MASK_REGIONS_TOO_SMALL",
        lambda: (regions_spec(parent_id(), {"regions": [{"rect": [100, 100, 15, 15]}]}), None),
    ),
    "regions-and-a-mask-file": (
        "MASK_AMBIGUOUS",
        lambda: (regions_spec(parent_id(), {"regions": [{"rect": [0, 0, 10, 10]}]}), mask_png(PARENT_SIZE)),
    ),
}


@pytest.mark.parametrize("case", list(REJECTIONS), ids=list(REJECTIONS))
def test_given_unusable_parent_or_mask_when_uploaded_then_rejected_with_code_and_nothing_paid(
    wide_parents, stack, sim, s3, table, bucket, provider, case, caplog
):
    code, build = REJECTIONS[case]
    spec, mask = build()
    job_id = new_job_id(case)
    caplog.set_level("INFO", logger="vary-region")
    files, etags = upload(s3, bucket, job_id, spec, mask)

    outcome = wait_for_upload_outcome(caplog, job_id)

    assert outcome == "rejected", f"the submit function's decision for {job_id}: {outcome}, not {code}"
    item = wait_for_job(table, job_id, timeout=5)  # written before the decision is logged

    assert item["status"] == "REJECTED", item
    assert (item["error"]["code"], item["error"]["stage"]) == (code, "intake")
    error_doc = json.loads(wait_for_object(s3, bucket, f"results/{job_id}/error.json"))
    assert error_doc == {"job_id": job_id, "status": "REJECTED", "error": dict(item["error"])}
    wait_for_queue_drained(stack)
    assert provider.inpaint_calls(job_id) == 0 and job_item(table, job_id)["status"] == "REJECTED"
    assert keys_under(s3, bucket, f"inbox/{job_id}") == sorted(key for key, _, _ in files)
    for key, body, _ in files:
        stored = s3.get_object(Bucket=bucket, Key=key)
        assert (stored["ETag"], stored["Body"].read()) == (etags[key], body)
    if code == "PARENT_IS_GRID":
        assert "index" in item["error"]["message"]
    if code == "MASK_REGIONS_TOO_SMALL":
        assert '"units": "fraction"' in item["error"]["message"]
    if code == "MASK_SIZE_MISMATCH":
        assert "512x512" in item["error"]["message"] and "640x384" in item["error"]["message"]


# ---- a parent still running: the job waits, then pays once -------------------------------------------
def test_given_running_parent_when_uploaded_then_job_is_held_and_submitted_once_it_finishes(
    wide_parents, stack, sim, s3, table, bucket, provider
):
    parent = parent_id("running-2")  # the simulator answers "running" to its first two Fetches
    job_id = new_job_id("waits")
    upload(s3, bucket, job_id, job_json(parent_task_id=parent), mask_png(PARENT_SIZE))

    item = wait_for_job(table, job_id, ("COMPLETED", "FAILED", "REJECTED"), timeout=40)

    assert item["status"] == "COMPLETED", item
    assert item["held_reason"] == "PARENT_RUNNING", "the job says why it waited"
    assert provider.fetches(parent) >= 3, "asked again after each wait"
    assert provider.inpaint_calls(job_id) == 1


# ---- masks from regions, in pixels and in fractions ----------------------------------------------------
@pytest.mark.parametrize(
    ("mask", "box"),
    [
        ({"regions": [{"rect": [64, 32, 128, 96]}], "units": "px"}, (64, 32, 192, 128)),
        ({"regions": [{"rect": [0.5, 0.25, 0.25, 0.5]}], "units": "fraction"}, (320, 96, 480, 288)),
    ],
    ids=["pixels", "fractions"],
)
def test_given_region_mask_when_uploaded_alone_then_it_completes_with_the_regions_drawn_at_parent_size(
    wide_parents, stack, sim, s3, table, bucket, provider, mask, box
):
    job_id = new_job_id("regions")
    upload(s3, bucket, job_id, regions_spec(parent_id(), mask))

    item = wait_for_job(table, job_id, timeout=30)

    assert item["status"] == "COMPLETED", item
    grey = assert_binary_at_parent_size(sent_mask(sim, job_id))
    assert grey.getbbox() == box
    assert grey.crop(box).getextrema() == (255, 255), "white exactly inside the region"
    assert provider.inpaint_calls(job_id) == 1


def test_given_ellipse_and_polygon_regions_when_uploaded_then_inside_white_outside_black(
    wide_parents, stack, sim, s3, table, bucket
):
    job_id = new_job_id("shapes")
    shapes = {"regions": [{"ellipse": [160, 192, 100, 60]}, {"polygon": [[400, 50], [600, 50], [500, 300]]}]}
    upload(s3, bucket, job_id, regions_spec(parent_id(), shapes))

    assert wait_for_job(table, job_id, timeout=30)["status"] == "COMPLETED"
    grey = assert_binary_at_parent_size(sent_mask(sim, job_id))
    assert grey.getpixel((160, 192)) == 255 and grey.getpixel((500, 100)) == 255
    assert grey.getpixel((62, 134)) == 0 and grey.getpixel((410, 290)) == 0 and grey.getpixel((320, 20)) == 0


# ---- mask files: resized on request, binarised whatever their format ------------------------------------
def test_given_mask_of_another_size_with_resize_when_uploaded_then_it_is_scaled_to_the_parent_and_binary(
    wide_parents, stack, sim, s3, table, bucket
):
    job_id = new_job_id("resize")
    upload(s3, bucket, job_id, job_json(parent_task_id=parent_id(), mask_fit="resize"), mask_png((512, 512)))

    assert wait_for_job(table, job_id, timeout=30)["status"] == "COMPLETED"
    grey = assert_binary_at_parent_size(sent_mask(sim, job_id))
    box = grey.getbbox()  # the 128..320 box of 512, scaled to 640x384
    assert box is not None, "the mask sent has a white area"
    left, top, right, bottom = box
    assert abs(left - 160) <= 1 and abs(right - 400) <= 1 and abs(top - 96) <= 1 and abs(bottom - 240) <= 1


def _jpeg_mask() -> bytes:
    image = Image.new("RGB", PARENT_SIZE, (0, 0, 0))
    image.paste((255, 255, 255), (100, 100, 300, 300))
    return png(image, "JPEG")


def _grey_mask() -> bytes:
    image = Image.new("L", PARENT_SIZE, 0)
    image.paste(90, (0, 0, 640, 100))  # dark grey haze: kept
    image.paste(200, (100, 100, 300, 300))  # light grey: redrawn
    return png(image)


def _alpha_mask() -> bytes:
    image = Image.new("RGBA", PARENT_SIZE, (255, 255, 255, 0))  # transparent (white underneath): kept
    image.paste((255, 255, 255, 255), (100, 100, 300, 300))  # painted: redrawn
    return png(image)


@pytest.mark.parametrize(
    ("mask", "name"),
    [(_jpeg_mask, "mask.jpg"), (_grey_mask, "mask.png"), (_alpha_mask, "mask.png")],
    ids=["jpeg", "grey", "alpha"],
)
def test_given_jpeg_grey_or_transparent_mask_when_uploaded_then_apiframe_gets_it_strictly_black_and_white(
    wide_parents, stack, sim, s3, table, bucket, mask, name
):
    job_id = new_job_id("binarised")
    upload(s3, bucket, job_id, job_json(parent_task_id=parent_id()), mask(), mask_name=name)

    assert wait_for_job(table, job_id, timeout=30)["status"] == "COMPLETED"
    grey = assert_binary_at_parent_size(sent_mask(sim, job_id))
    box = grey.getbbox()
    assert box is not None, "the mask sent has a white area"
    left, top, right, bottom = box
    assert abs(left - 100) <= 2 and abs(top - 100) <= 2 and abs(right - 300) <= 2 and abs(bottom - 300) <= 2


# ---- the parent's size comes from its first bytes -------------------------------------------------------
def test_given_a_job_when_the_parent_size_is_read_then_only_a_ranged_read_of_the_parent_is_made(
    wide_parents, stack, sim, s3, table, bucket
):
    parent = parent_id()
    job_id = new_job_id("ranged")
    upload(s3, bucket, job_id, job_json(parent_task_id=parent), mask_png(PARENT_SIZE))

    assert wait_for_job(table, job_id, timeout=30)["status"] == "COMPLETED"
    path = f"/images/{parent}/parent.png"
    reads = [r for r in list(sim.image_requests_log) if r["path"] == path]
    # Before paying, only ranged reads; the one whole download is the copy to parent.png at the end.
    before_submission, copy = reads[:-1], reads[-1]
    assert before_submission and all(r["range"] == "bytes=0-65535" and r["status"] == 206 for r in before_submission)
    assert (copy["range"], copy["status"]) == (None, 200), reads
    stored = s3.get_object(Bucket=bucket, Key=f"results/{job_id}/parent.png")["Body"].read()
    assert Image.open(io.BytesIO(stored)).size == PARENT_SIZE


def test_given_parent_larger_than_the_header_read_when_read_then_it_stops_after_the_header(stack, sim, monkeypatch):
    from vary_region.image_hosts.pinned_http import pinned_session, read_prefix
    from vary_region.image_hosts.url_policy import check_image_url
    from vary_region.settings import ImageOrigin
    from vary_region.submit.mask_file import image_header_size

    parent = parent_id()
    # A noisy picture does not compress: several times the 64 KiB a ranged read may take.
    whole = png(Image.effect_noise(PARENT_SIZE, 80).convert("RGB"))
    monkeypatch.setitem(sim._parents, parent, whole)
    assert len(whole) > 65536, "the picture must be larger than the ranged read for this test to mean anything"
    # The simulator's origin, admitted by name as the stack's ALLOWED_IMAGE_HOSTS does.
    target = check_image_url(f"{sim.base_url}/images/{parent}/parent.png", [ImageOrigin.parse(sim.base_url)])
    session, adapter = pinned_session()

    size, read = read_prefix(session, adapter, target, image_header_size, max_bytes=65536)

    assert size == Image.open(io.BytesIO(whole)).size
    assert read < 65536 < len(whole), f"read {read} bytes of a {len(whole)}-byte picture"
    assert sim.image_requests_log[-1]["range"] == "bytes=0-65535"
