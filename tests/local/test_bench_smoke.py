"""The benchmark (`make bench`) is not part of the test run, but it must keep working: run it on tiny
inputs and check that it finishes and reports every figure. Targets are not asserted: the machines
that run the tests are shared and noisy, and the tiny sizes say nothing about them anyway."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench import mask_memory

# The benchmarks start stacks of their own, always APIFRAME v1: the suite's v2 pass would repeat this.
pytestmark = pytest.mark.fixed_generation
REPO_ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ("completion", "publisher", "reconciler", "submit", "webhook")
FIGURES = {
    "copy_project_seconds",
    "copy_baseline_seconds",
    "copy_ratio",
    "copy_five_seconds",
    "copy_slowest_alone_seconds",
    "copy_five_vs_slowest_ratio",
    "memory_project_mib",
    "memory_baseline_mib",
    "import_boto3_ms",
    *(f"import_{name}_{kind}" for name in FUNCTIONS for kind in ("ms", "ratio", "no_bytecode_ms")),
    "mask_file_ms",
    "mask_regions_ms",
    "mask_memory_at_rest_mib",
    "mask_memory_regions_mib",
    *(f"mask_memory_{form.key}{kind}" for form in mask_memory.FORMS for kind in ("_mib", "_naive_mib")),
    "pipeline_jobs_completed",
    "pipeline_jobs_per_second",
    "pipeline_publish_p50_ms",
    "pipeline_publish_p95_ms",
    "pipeline_submit_p50_ms",
    "pipeline_submit_p95_ms",
    "pipeline_complete_p50_ms",
    "pipeline_complete_p95_ms",
    "pipeline_webhook_answer_p50_ms",
    "pipeline_webhook_answer_p95_ms",
    "pipeline_burst_webhook_answer_p95_ms",
    "pipeline_recovery_jobs_per_minute",
}
JUDGED = {
    "copy_ratio",
    "copy_five_vs_slowest_ratio",
    "memory_project_mib",
    "pipeline_jobs_completed",
    "pipeline_webhook_answer_p95_ms",
    "pipeline_recovery_jobs_per_minute",
    *(f"import_{n}_ratio" for n in FUNCTIONS),
    "mask_memory_regions_mib",
    *(f"mask_memory_{form.key}_mib" for form in mask_memory.FORMS),
}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_given_tiny_sizes_when_bench_runs_then_it_exits_0_and_writes_every_figure(tmp_path):
    output = tmp_path / "results.json"

    # A subprocess: the benchmark starts its own local stack, which must not meet the test session's.
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--output", str(output)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )

    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    results = json.loads(output.read_text())
    assert results["run"]["mode"] == "smoke"
    figures = results["figures"]
    assert set(figures) == FIGURES
    for key, figure in figures.items():
        assert isinstance(figure["value"], int | float) and math.isfinite(figure["value"]), (key, figure)
        assert figure["value"] >= 0, (key, figure)
        assert (figure["target"] is not None) == (key in JUDGED), (key, figure)
        assert figure["passed"] in (True, False, None)
        assert figure["label"] in done.stdout, f"the table lacks {figure['label']!r}"
    assert figures["pipeline_jobs_completed"]["value"] == 5, "every smoke job must complete"
