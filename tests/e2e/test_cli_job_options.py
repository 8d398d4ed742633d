"""The CLI says everything a job file can (issue #28, item 5): shapes of different kinds in one job,
and a mask file of another size than the parent scaled with --mask-fit resize; the pipeline takes both."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from tests.e2e.conftest import Aws, CliRunner
from tests.e2e.test_cli_and_local_stack import assert_ok, unique

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def submit_and_watch(run_cli: CliRunner, *argv: str) -> tuple[str, str]:
    submitted = run_cli("submit", *argv)
    assert_ok(submitted)
    job_id = submitted.stdout.strip()
    watched = run_cli("watch", job_id, "--timeout", "45", "--interval", "0.2")
    return job_id, watched.stdout


def test_rectangles_ellipses_and_polygons_in_one_job(run_cli: CliRunner, aws: Aws) -> None:
    shapes = ["--rect", "40,40,100,80", "--ellipse", "350,350,60,40", "--rect", "300,60,80,80"]
    shapes += ["--polygon", "50,400,150,300,200,480"]
    job_id, watched = submit_and_watch(run_cli, "--parent-task-id", unique("e2e-mixed"), *shapes)
    assert "COMPLETED" in watched, watched
    spec = json.loads(aws.s3.get_object(Bucket=aws.bucket, Key=f"inbox/{job_id}/job.json")["Body"].read())
    assert [next(iter(region)) for region in spec["mask"]["regions"]] == ["rect", "rect", "ellipse", "polygon"]
    drawn = Image.open(
        io.BytesIO(aws.s3.get_object(Bucket=aws.bucket, Key=f"results/{job_id}/mask.png")["Body"].read())
    )
    white = {point: drawn.convert("L").getpixel(point) for point in [(90, 80), (340, 100), (350, 350), (130, 400)]}
    assert set(white.values()) == {255}, white  # each shape, drawn at the parent's size
    assert drawn.convert("L").getpixel((250, 250)) == 0


def test_mask_fit_resize_scales_a_smaller_mask_file(run_cli: CliRunner, aws: Aws, tmp_path: Path) -> None:
    small = Image.new("L", (256, 256), 0)
    small.paste(255, (64, 64, 128, 128))
    small.save(tmp_path / "small.png")
    parent = unique("e2e-fit")

    _, refused = submit_and_watch(run_cli, "--parent-task-id", parent, "--mask", str(tmp_path / "small.png"))
    assert "REJECTED: MASK_SIZE_MISMATCH" in refused, refused  # what --mask-fit is for

    job_id, watched = submit_and_watch(
        run_cli, "--parent-task-id", parent, "--mask", str(tmp_path / "small.png"), "--mask-fit", "resize"
    )
    assert "COMPLETED" in watched, watched
    spec = json.loads(aws.s3.get_object(Bucket=aws.bucket, Key=f"inbox/{job_id}/job.json")["Body"].read())
    assert spec == {"parent_task_id": parent, "mask_fit": "resize"}
    drawn = Image.open(
        io.BytesIO(aws.s3.get_object(Bucket=aws.bucket, Key=f"results/{job_id}/mask.png")["Body"].read())
    )
    assert drawn.size == (512, 512) and drawn.convert("L").getbbox() == (128, 128, 256, 256)
