"""IAM proved by running, on the one deployed stack: each mutant in iam_mutants.toml takes one
statement (or one action of it, or one managed policy) from a function's role, as a template without
it would have deployed the role (iam.py); then the path that needs it runs, and the emulator
(AUTH=true) must deny the call and the rehearsal must name it ("<function> denied <action>"). The
role is restored before the next mutant. A mutant whose path runs without the denial is a statement
nothing proves needed (or a path that does not use it): it survives, and the rehearsal fails.

A redeploy per mutant took about 90 s each (650 s for seven); a policy patch takes a second, so each
mutant costs only its path, ended at the first denial.
"""

from __future__ import annotations

import contextlib
import json
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vary_region_local.rehearsal import iam
from vary_region_local.rehearsal.denials import describe
from vary_region_local.rehearsal.paths import Pipeline
from vary_region_local.rehearsal.report import PathFailed, Report

MUTANTS = Path(__file__).with_name("iam_mutants.toml")
DENIAL_TIMEOUT = 60.0  # a path's first call that needs the statement comes within seconds of its start


@dataclass(frozen=True)
class IamMutant:
    name: str
    guarantee: str
    function: str  # logical id in template.yaml
    path: str  # a key of PATHS: what runs while the statement is gone
    denied: str  # what the rehearsal must name: "<function> denied <action>"
    statement: str = ""  # the Sid of the inline statement removed
    action: str = ""  # only this action of the statement removed
    managed_policy: str = ""  # or: this managed policy (logical id) detached

    def removal(self, pipeline: Pipeline) -> iam.Removal:
        function = pipeline.stack.function_name(self.function)
        if self.managed_policy:
            arn = iam.managed_policy_arn(function, pipeline.stack.resources[self.managed_policy])
            return iam.Removal(function, managed_policy_arn=arn)
        return iam.Removal(function, statement=self.statement, action=self.action)


def load(path: Path = MUTANTS) -> list[IamMutant]:
    return [IamMutant(**entry) for entry in tomllib.loads(path.read_text())["mutant"]]


# ---- the paths a mutant runs: each starts one job (or one run) of its own ------------------------
def _rejected(pipeline: Pipeline, job_id: str) -> None:
    pipeline.drop_job(job_id, json.loads(pipeline.example("job.json")), b"this is not a PNG")


def _plain(pipeline: Pipeline, job_id: str) -> None:
    pipeline.drop_job(job_id, json.loads(pipeline.example("job.json")), pipeline.example("mask.png"))


def _requested(pipeline: Pipeline, job_id: str) -> None:
    from vary_region_local.rehearsal.checks import REQUESTED_DETAIL, put_request

    put_request(pipeline, {**REQUESTED_DETAIL, "job_id": job_id})


def _reconcile(pipeline: Pipeline, job_id: str) -> None:
    with contextlib.suppress(PathFailed):  # it fails on the denial: what counts is read from the logs
        pipeline.run_reconciler_schedule()


def _held(pipeline: Pipeline, job_id: str) -> None:
    from vary_region_local.rehearsal.checks import start_held

    start_held(pipeline, job_id)  # the 429s end with the mutant (run_one)


def _repair(pipeline: Pipeline, job_id: str) -> None:
    from vary_region_local.rehearsal.checks import start_repair

    start_repair(pipeline)  # the main paths' REJECTED job, its error.json deleted again


PATHS: dict[str, Callable[[Pipeline, str], None]] = {
    "rejected": _rejected,
    "plain": _plain,
    "requested": _requested,
    "reconcile": _reconcile,
    "held": _held,
    "repair": _repair,
}


def run_one(pipeline: Pipeline, mutant: IamMutant) -> tuple[bool, str]:
    """(caught, what was seen), the role restored whatever happened."""
    pipeline.denials.reset()
    started = time.monotonic()
    with iam.removed(mutant.removal(pipeline)) as what:
        try:
            PATHS[mutant.path](pipeline, f"iam-{mutant.name}")
            while not _names(pipeline, mutant) and time.monotonic() - started < DENIAL_TIMEOUT:
                time.sleep(0.5)
        finally:
            pipeline.provider.set_faults(rate_limit_next=0)  # a held path's 429s end here
    took = time.monotonic() - started
    found = pipeline.denials.found
    if _names(pipeline, mutant):
        return True, f"caught: {what}; path {mutant.path} -> {describe(found)}"
    seen = describe(found) if found else "no AccessDenied"
    return False, f"SURVIVED: {what}; path {mutant.path} ran {took:.0f}s, {seen}, not '{mutant.denied}'"


def _names(pipeline: Pipeline, mutant: IamMutant) -> bool:
    return mutant.denied in describe(pipeline.denials.look())


def run_all(pipeline: Pipeline, report: Report, names: list[str] | None = None) -> None:
    mutants = load()
    unknown = set(names or []) - {m.name for m in mutants}
    if unknown:
        raise SystemExit(f"unknown IAM mutants: {sorted(unknown)}")
    unknown_paths = {m.path for m in mutants} - set(PATHS)
    if unknown_paths:
        raise SystemExit(f"iam_mutants.toml names paths the rehearsal has not: {sorted(unknown_paths)}")
    began, caught, chosen = time.monotonic(), 0, [m for m in mutants if not names or m.name in names]
    for mutant in chosen:
        passed_before = len(report.passed)
        report.run(f"IAM mutant {mutant.name}", lambda m=mutant: _judged(pipeline, m))  # type: ignore[misc]
        caught += len(report.passed) > passed_before
    print(f"==> IAM mutants: {caught} of {len(chosen)} caught ({time.monotonic() - began:.0f}s)", flush=True)


def _judged(pipeline: Pipeline, mutant: IamMutant) -> str:
    ok, detail = run_one(pipeline, mutant)
    if not ok:
        raise PathFailed(detail)
    return detail
