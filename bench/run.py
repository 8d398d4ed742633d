"""Run every benchmark once, print the table and write bench/results.json.

    python -m bench.run            # the real sizes (`make bench`)
    python -m bench.run --smoke    # tiny sizes: checks the benchmark still works, judges nothing

Sections, in order (each one's servers are stopped before the next starts, so they do not compete):
1. copy time: 5 result images through the project's copier and through a naive sequential copy;
2. copy memory: peak RSS of copying one large image, in a process that does nothing else;
3. import time: cold import of each handler module against `import boto3`, on the layer as its
   Makefile builds it (and the same layer without bytecode);
4. mask step: checking and binarising a mask file, and rendering regions, for a 2048x2048 parent;
5. mask memory: peak RSS of the submit function's mask step for every form of mask file at the
   largest size the rules allow, each in a subprocess, against the function's MemorySize;
6. pipeline: jobs through the whole local stack, the simulator at zero delay; then jobs whose every
   webhook was lost, recovered by the reconciler.
The exit status is 0 whenever the benchmarks ran, met targets or not: the table says which.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import copy_bench, import_bench, mask_bench, mask_memory, pipeline_bench
from bench.report import Section, render_table, write_results
from bench.servers import running_servers

MiB = 1024 * 1024
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results.json"


@dataclass(frozen=True)
class Profile:
    copy: copy_bench.CopySettings
    import_repeats: int
    jobs: int
    paced_jobs: int
    recovery_jobs: int
    jobs_timeout_seconds: float
    mask_side: int | None  # the mask memory section's largest side (None: the rules' own)


FULL = Profile(
    copy=copy_bench.CopySettings(
        images=5, image_bytes=4 * MiB, latency_seconds=0.2, bytes_per_second=20e6, repeats=3, probe_bytes=64 * MiB
    ),
    import_repeats=9,  # the machines are shared: more interleaved runs steady the medians
    jobs=200,
    paced_jobs=40,
    recovery_jobs=500,
    jobs_timeout_seconds=240,
    mask_side=None,
)
SMOKE = Profile(
    copy=copy_bench.CopySettings(
        images=5, image_bytes=64 * 1024, latency_seconds=0.05, bytes_per_second=20e6, repeats=1, probe_bytes=2 * MiB
    ),
    import_repeats=1,
    jobs=5,
    paced_jobs=3,
    recovery_jobs=5,
    jobs_timeout_seconds=60,
    mask_side=256,
)


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(profile: Profile) -> list[Section]:
    sections: list[Section] = []
    with running_servers() as servers:
        _log("copy time: project copier vs naive baseline")
        sections.append(copy_bench.copy_time(servers, profile.copy))
        _log("copy memory: peak RSS in a subprocess")
        sections.append(copy_bench.copy_memory(servers, profile.copy))
    _log(f"import time: builds the layer, then {profile.import_repeats} fresh interpreters per module")
    with tempfile.TemporaryDirectory(prefix="vary-region-bench-") as scratch:
        sections.append(import_bench.run(profile.import_repeats, Path(scratch)))
    _log("mask step: a 2048x2048 mask file checked and binarised, regions rendered at 2048x2048")
    sections.append(mask_bench.mask_step())
    _log("mask memory: every form of mask file at its largest, checked, fitted and sent, each in a subprocess")
    sections.append(mask_memory.run(profile.mask_side, one_process=profile.mask_side is not None))
    _log(f"pipeline: {profile.jobs} jobs through the local stack, then {profile.recovery_jobs} with every webhook lost")
    sections.append(
        pipeline_bench.run(profile.jobs, profile.paced_jobs, profile.recovery_jobs, profile.jobs_timeout_seconds)
    )
    return sections


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for the smoke test")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"default: {DEFAULT_OUTPUT}")
    args = parser.parse_args(argv)

    started = time.monotonic()
    load_before = os.getloadavg()
    sections = run(SMOKE if args.smoke else FULL)
    run_info = {
        "mode": "smoke" if args.smoke else "full",
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - started, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        # The machine is shared: a high load average is the first suspect for a surprising figure.
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }
    write_results(args.output, sections, run_info)

    print(render_table(sections))
    findings = [finding for section in sections for finding in section.findings]
    if findings:
        print("\nFindings:")
        print("\n".join(f"- {finding}" for finding in findings))
    print(f"\n{run_info['mode']} run in {run_info['seconds']} s; figures written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
