"""Mutation check for the guarantees: break each mechanism on purpose and require a test to catch it.

Every mutant in scripts/mutants/*.toml names one mechanism behind a guarantee the README sells
(the claim condition, the secret check, the Fetch confirmation, ...), the exact text that
implements it and what to put instead, and the tests that prove the guarantee. The check copies
the tracked tree to a scratch folder, applies one mutant there and runs its tests. A mutant whose
text no longer matches exactly once fails the check too, so the list cannot silently fall behind
the code.

A mutant is caught only when a test that passed unmutated on this same tree (the baseline) fails
with it on an assertion: an `assert`, an AssertionError, or pytest.raises' "DID NOT RAISE". A test
that errors (a fixture, set-up or tear-down broke), times out (pytest-timeout), raises anything
else, or crashes pytest says nothing about the mechanism, and a test that did not pass unmutated
is not counted at all: with either, a flaky or slow test could pass a surviving mutant off as
caught. Outcomes are read from pytest's JUnit XML report, per test; the report names the tests that
caught each mutant, or why it was not caught.

    python scripts/mutation_check.py                # every mutant; the baseline is run first
    python scripts/mutation_check.py NAME ...       # only these
    python scripts/mutation_check.py --suite-passed # after `make test` on this same tree (CI)
    python scripts/mutation_check.py --jobs 1       # one mutant at a time (default: two per core)

Mutant format (scripts/mutants/*.toml), one [[mutant]] table each: name, guarantee, file, find
(must occur exactly once in file), replace, tests (pytest paths or node ids, run in the scratch copy).

This module is also the pytest plugin of each mutant's run (`-p mutation_check`): it ends the run at
the first catch, as `-x` would, but a failure that does not count does not end it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MUTANT_FILES = REPO / "scripts" / "mutants"
# Import roots of the editable install; put first on sys.path so the scratch copy is what runs.
IMPORT_ROOTS = ("layers/vary_region", "local", "cli", ".")
# `make test` writes its JUnit report here, and beside it (TREE_STATE_SUFFIX) the state of the tree
# it ran on: with --suite-passed that report is the baseline, so CI does not run the suite twice.
SUITE_RESULTS = ".local/test-results.xml"
TREE_STATE_SUFFIX = ".tree"
# A mutant's run reads the baseline's passed tests (one node id a line) from the file named here.
COUNTED_ENV = "MUTATION_CHECK_COUNTED"
MUTANT_TIMEOUT_SECONDS = 900
# Mutants run side by side, each in a scratch copy of its own: a mutant's run mostly waits on its
# local stack (measured: about a third of a core each), so two per core keep the cores busy.
DEFAULT_JOBS = 2 * (os.cpu_count() or 1)
BASELINE_TIMEOUT_SECONDS = 3600


@dataclass(frozen=True)
class Mutant:
    name: str
    guarantee: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]


def load_mutants() -> list[Mutant]:
    mutants = []
    for path in sorted(MUTANT_FILES.glob("*.toml")):
        for entry in tomllib.loads(path.read_text())["mutant"]:
            mutants.append(Mutant(**{**entry, "tests": tuple(entry["tests"])}))
    names = [m.name for m in mutants]
    duplicated = {n for n in names if names.count(n) > 1}
    if duplicated:
        raise SystemExit(f"mutant names used twice: {sorted(duplicated)}")
    return mutants


def tracked_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and (REPO / name).is_file()]


def tree_state(files: Iterable[str]) -> str:
    """A digest of exactly what the check copies (path and content of every file): two trees with
    the same state run the same tests on the same code."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256((REPO / name).read_bytes()).digest())
    return digest.hexdigest()


# --- What one test did, as pytest's JUnit XML report tells it ---------------------------------


class Outcome(StrEnum):
    PASSED = "passed"
    ASSERTION = "failed on an assertion"
    TIMEOUT = "timed out"  # pytest-timeout stopped it
    RAISED = "raised"  # its call raised something else than an assertion: a crash, not a check
    ERROR = "errored"  # set-up, tear-down or collection failed: nothing was checked
    SKIPPED = "skipped"


@dataclass(frozen=True)
class CaseResult:
    test: str  # the pytest node id
    outcome: Outcome
    message: str = ""  # the first line of pytest's message about it


# pytest_timeout.PYTEST_FAILURE_MESSAGE, raised through pytest.fail (so pytest calls it "Failed").
_TIMEOUT = re.compile(r"Failed: Timeout \(>[0-9.]+s\) from pytest-timeout")
# pytest names a failure by its exception (exconly): "assert ..." for a rewritten assert, else
# "TypeName: ...". pytest.raises that saw nothing raises Failed too, and is an assertion.
_ASSERTION = re.compile(r"(assert\b|AssertionError\b|Failed: DID NOT (RAISE|WARN)\b)")
# The last line of pytest's traceback: "path:line: TypeName", where the exception was raised.
_RAISED_AT = re.compile(r"^(?!E )([^\s>][^:\n]*):(\d+): [\w.]+$", re.MULTILINE)
# Where the tests' own checks live: an assert of the code under test that fires is a crash.
TEST_CODE = "tests/"


def failure_kind(message: str, traceback: str = "") -> Outcome:
    """The outcome of a test whose call failed: `message` is pytest's one-line account of the
    exception (its reprcrash message), `traceback` the report's text, if known."""
    if _TIMEOUT.match(message):
        return Outcome.TIMEOUT
    if not _ASSERTION.match(message):
        return Outcome.RAISED
    places = _RAISED_AT.findall(traceback)
    if places and not places[-1][0].startswith(TEST_CODE):
        return Outcome.RAISED
    return Outcome.ASSERTION


def raised_at(traceback: str) -> str:
    places = _RAISED_AT.findall(traceback)
    return f"{places[-1][0]}:{places[-1][1]}" if places else ""


def node_id(classname: str, name: str, test_files: Collection[str]) -> str:
    """The pytest node id behind a JUnit test case: pytest writes "tests/a/test_b.py::C::test_d[x]"
    as classname "tests.a.test_b.C" and name "test_d[x]"; the test file is the known file the
    classname starts with. A module that could not be collected is named by its dotted path alone."""
    # pytest-xdist's loadgroup names a grouped test "test_d[x]@group" in its report (make test runs
    # in parallel); the node id, and the mutant runs (never parallel), have no group.
    base, at, group = name.rpartition("@")
    if at and "[" not in group and "]" not in group:
        name = base
    parts = classname.split(".") if classname else name.split(".")
    for end in range(1, len(parts) + 1):
        path = "/".join(parts[:end]) + ".py"
        if path in test_files:
            return "::".join([path, *parts[end:], name]) if classname else path
    return f"{classname}::{name}" if classname else name


def read_junit(text: str, test_files: Collection[str]) -> list[CaseResult]:
    """Every test case of a JUnit XML report. A test can appear twice (its call failed and its
    tear-down errored too): each appearance is a result of its own."""
    results = []
    for case in ET.fromstring(text).iter("testcase"):  # noqa: S314 (pytest's own report of our own run)
        test = node_id(case.get("classname", ""), case.get("name", ""), test_files)
        ending = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
        if ending is None:
            results.append(CaseResult(test, Outcome.PASSED))
            continue
        message, traceback = ending.get("message") or "", ending.text or ""
        if ending.tag == "failure":
            outcome = failure_kind(message, traceback)
            if outcome is Outcome.RAISED and raised_at(traceback):
                message = f"{first_line(message)} at {raised_at(traceback)}"
        else:
            outcome = Outcome.ERROR if ending.tag == "error" else Outcome.SKIPPED
        results.append(CaseResult(test, outcome, first_line(message)))
    return results


def first_line(message: str, limit: int = 160) -> str:
    line = message.strip().splitlines()[0] if message.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def passed_tests(*reports: list[CaseResult]) -> set[str]:
    """The tests that passed in every report that ran them, and in at least one."""
    passed = {r.test for report in reports for r in report if r.outcome is Outcome.PASSED}
    return passed - {r.test for report in reports for r in report if r.outcome is not Outcome.PASSED}


def selects(spec: str, test: str) -> bool:
    """Whether the pytest argument `spec` (a folder, a file or a node id) selects the test `test`."""
    spec = spec.rstrip("/")
    return test == spec or test.startswith((spec + "::", spec + "[", spec + "/"))


def counted_tests(mutant: Mutant, baseline: set[str]) -> set[str]:
    """The tests of the mutant that passed unmutated: only these can catch it."""
    return {test for test in baseline if any(selects(spec, test) for spec in mutant.tests)}


@dataclass(frozen=True)
class Verdict:
    caught: bool
    detail: str


def judge(results: list[CaseResult], counted: Collection[str]) -> Verdict:
    """Caught: a counted test failed on an assertion with the mutant applied."""
    catches = [r for r in results if r.outcome is Outcome.ASSERTION and r.test in counted]
    if catches:
        return Verdict(True, "caught by " + "; ".join(f"{r.test} ({r.message})" for r in catches))
    failures = [r for r in results if r.outcome not in (Outcome.PASSED, Outcome.SKIPPED)]
    passed = sum(r.outcome is Outcome.PASSED and r.test in counted for r in results)
    if not failures:
        if not passed:
            return Verdict(False, "not caught: none of its tests that passed unmutated ran")
        return Verdict(False, f"SURVIVED: its {passed} tests passed with the mechanism broken")
    why = "; ".join(_why_not_a_catch(r, counted) for r in failures[:5])
    more = f"; and {len(failures) - 5} more like these" if len(failures) > 5 else ""
    return Verdict(False, f"not caught: {why}{more}; {passed} passed")


def _why_not_a_catch(result: CaseResult, counted: Collection[str]) -> str:
    if result.test not in counted:
        return f"{result.test} {result.outcome} but had not passed unmutated, so it is not counted ({result.message})"
    what = {
        Outcome.TIMEOUT: "timed out (a time-out is not a catch)",
        Outcome.RAISED: "raised instead of failing an assertion",
        Outcome.ERROR: "errored (a broken set-up is not a catch)",
    }[result.outcome]
    return f"{result.test} {what} ({result.message})"


# --- Running tests in a scratch copy ----------------------------------------------------------


@dataclass(frozen=True)
class Run:
    results: list[CaseResult] | None  # None: pytest wrote no report (it crashed, or ran over time)
    summary: str  # pytest's last line, and the end of its error output when it did not run cleanly
    seconds: float


def run_tests(
    tests: Iterable[str],
    files: list[str],
    change: tuple[str, str, str] | None = None,
    counted: Collection[str] | None = None,
    timeout: float = MUTANT_TIMEOUT_SECONDS,
) -> Run:
    """Run `tests` in a scratch copy of the tree, with `change` (file, find, replace) applied if given.
    With `counted`, the run ends at the first of those tests that fails on an assertion."""
    with tempfile.TemporaryDirectory(prefix="mutation-check-") as scratch:
        root = Path(scratch) / "tree"
        for name in files:
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target)
        if change is not None:
            path, find, replace = change
            (root / path).write_text((REPO / path).read_text().replace(find, replace))
        report = Path(scratch) / "results.xml"
        roots = [str(root / p) for p in IMPORT_ROOTS] + [str(Path(__file__).resolve().parent)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(roots), PYTHONDONTWRITEBYTECODE="1")
        env.pop(COUNTED_ENV, None)
        if counted is not None:
            listed = Path(scratch) / "counted.txt"
            listed.write_text("".join(f"{test}\n" for test in sorted(counted)))
            env[COUNTED_ENV] = str(listed)
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--no-header", "-o", "addopts="]
        command += ["-p", "mutation_check", f"--junitxml={report}", *tests]
        started = time.monotonic()
        try:
            done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return Run(None, f"ran over {timeout:.0f}s and was stopped", time.monotonic() - started)
        took = time.monotonic() - started
        summary = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
        if done.returncode not in (0, 1):
            summary += f" (pytest exit {done.returncode})\n" + done.stderr[-2000:]
        if not report.is_file():
            return Run(None, summary, took)
        return Run(read_junit(report.read_text(), set(files)), summary, took)


# Where a mutant's text is looked for when it is no longer in the file its toml names.
SOURCE_ROOTS = ("layers/", "functions/", "local/", "cli/")


def locate(mutant: Mutant, files: list[str]) -> tuple[str | None, str]:
    """The file the mutant changes: the one its toml names, or, when the code moved, the one source
    file in which its text occurs, exactly once (so a move never drops a mutant silently)."""
    named = REPO / mutant.file
    if named.is_file() and named.read_text().count(mutant.find) == 1:
        return mutant.file, ""
    holding = {
        name: count
        for name in files
        if name.startswith(SOURCE_ROOTS)
        and name.endswith(".py")
        and (count := (REPO / name).read_text().count(mutant.find))
    }
    if len(holding) == 1 and next(iter(holding.values())) == 1:
        found = next(iter(holding))
        return found, f"moved: its text is in {found}, not {mutant.file} (update the toml) "
    where = ", ".join(f"{name} ({count}x)" for name, count in sorted(holding.items())) or "no source file"
    return None, f"its text must occur exactly once, in one file; found in {where} (the toml names {mutant.file})"


def run_mutant(mutant: Mutant, files: list[str], baseline: set[str]) -> Verdict:
    path, note = locate(mutant, files)
    if path is None:
        return Verdict(False, note)
    mutant = replace(mutant, file=path)
    counted = counted_tests(mutant, baseline)
    if not counted:
        # The check's own error: nothing could show the mechanism broken.
        return Verdict(False, f"ERROR of the check: none of its tests passed unmutated ({' '.join(mutant.tests)})")
    run = run_tests(mutant.tests, files, (mutant.file, mutant.find, mutant.replace), counted)
    if run.results is None:
        return Verdict(False, f"not caught: its tests crashed or could not run: {run.summary}")
    verdict = judge(run.results, counted)
    return Verdict(verdict.caught, f"{note}{verdict.detail} [{run.seconds:.0f}s]")


# --- The baseline: what passed unmutated -------------------------------------------------------


def suite_baseline(path: Path, state: str, files: Collection[str]) -> list[CaseResult]:
    """The results `make test` wrote on this very tree; refused when missing or from another state."""
    recorded = Path(str(path) + TREE_STATE_SUFFIX)
    if not path.is_file() or not recorded.is_file():
        raise SystemExit(f"mutation check: no report of `make test` at {path} (run make test first)")
    if recorded.read_text().strip() != state:
        raise SystemExit(
            f"mutation check: {path} was written on another state of the tree (run make test again, "
            "or the check without --suite-passed)"
        )
    return read_junit(path.read_text(), files)


def describe_baseline(label: str, results: list[CaseResult], seconds: float | None = None) -> str:
    counts = {o: sum(r.outcome is o for r in results) for o in Outcome}
    took = f" in {seconds:.0f}s" if seconds is not None else ""
    line = f"baseline {label}: {counts[Outcome.PASSED]} passed, {counts[Outcome.SKIPPED]} skipped{took}"
    broken = [
        f"{r.test} {r.outcome} ({r.message})" for r in results if r.outcome not in (Outcome.PASSED, Outcome.SKIPPED)
    ]
    if broken:
        line += "; not counted: " + "; ".join(broken)
    return line


def scratch_specs(mutants: list[Mutant], suite_passed: bool) -> list[str]:
    """What runs unmutated in the scratch copy. Without a suite report: every test a mutant names,
    once. After `make test` (whose report is the baseline) a smaller run proves the scratch copy runs
    the tests as the tree does: every unit test a mutant names (seconds), and the first tests that
    start the stack in pytest's process (tests/integration) and as a user does (tests/e2e)."""
    sets = list(dict.fromkeys(m.tests for m in mutants))
    if suite_passed:
        firsts = (
            next((tests for tests in sets if any(test.startswith(suite) for test in tests)), ())
            for suite in ("tests/integration/", "tests/e2e/")
        )
        unit = tuple(test for tests in sets for test in tests if test.startswith("tests/unit/"))
        sets = [unit, *firsts]
    specs = list(dict.fromkeys(spec for tests in sets for spec in tests))
    # A spec inside another one would run its tests twice.
    return [spec for spec in specs if not any(other != spec and selects(other, spec) for other in specs)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument(
        "--suite-passed",
        action="store_true",
        help="take the baseline from the JUnit report `make test` wrote on this same tree",
    )
    parser.add_argument("--suite-results", default=SUITE_RESULTS, help=f"that report (default: {SUITE_RESULTS})")
    parser.add_argument(
        "--jobs", type=int, default=DEFAULT_JOBS, help=f"mutants run at once (default: {DEFAULT_JOBS}, two per core)"
    )
    parser.add_argument(
        "--tree-state", action="store_true", help="print the state of the tree (make test records it) and exit"
    )
    args = parser.parse_args(argv)
    if args.tree_state:
        try:
            print(tree_state(tracked_files()))
        except (OSError, subprocess.CalledProcessError) as exc:  # no git: the check will refuse that report
            print(f"mutation check: no tree state ({exc})", file=sys.stderr)
        return 0
    mutants = load_mutants()
    if args.names:
        unknown = set(args.names) - {m.name for m in mutants}
        if unknown:
            raise SystemExit(f"unknown mutants: {sorted(unknown)}")
        mutants = [m for m in mutants if m.name in args.names]
    files = tracked_files()
    reports = []
    if args.suite_passed:
        suite = suite_baseline(REPO / args.suite_results, tree_state(files), set(files))
        print(describe_baseline(f"{args.suite_results} (make test on this tree)", suite), flush=True)
        reports.append(suite)
    specs = scratch_specs(mutants, args.suite_passed)
    if specs:  # without any, pytest would run the whole suite
        run = run_tests(specs, files, timeout=BASELINE_TIMEOUT_SECONDS)
        if run.results is None:
            print(f"mutation check: the unmutated tests crashed or could not run ({run.summary}); no mutant was run")
            return 1
        print(describe_baseline(f"in the scratch copy ({' '.join(specs)})", run.results, run.seconds), flush=True)
        reports.append(run.results)
    baseline = passed_tests(*reports)
    failures = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        # Each run is a pytest process in its own scratch copy; the verdicts print in the toml order.
        verdicts = pool.map(lambda mutant: run_mutant(mutant, files, baseline), mutants)
        for mutant, verdict in zip(mutants, verdicts, strict=True):
            failures += not verdict.caught
            print(
                f"{'ok  ' if verdict.caught else 'FAIL'} {mutant.name} ({mutant.guarantee}): {verdict.detail}",
                flush=True,
            )
    print(f"mutation check: {len(mutants) - failures} of {len(mutants)} mutants caught", flush=True)
    return 1 if failures else 0


# --- The pytest plugin of a mutant's run (-p mutation_check) -----------------------------------

_session: Any = None
_counted: frozenset[str] = frozenset()


def pytest_sessionstart(session: Any) -> None:
    global _session, _counted
    listed = os.environ.get(COUNTED_ENV)
    if listed:
        _session, _counted = session, frozenset(Path(listed).read_text().splitlines())


def pytest_runtest_logreport(report: Any) -> None:
    """End the run at the first catch (as -x would at the first failure): the rest cannot change
    the verdict. Errors, time-outs and tests that are not counted let it go on."""
    if _session is None or report.when != "call" or not report.failed or report.nodeid not in _counted:
        return
    crash = getattr(report.longrepr, "reprcrash", None)
    traceback = str(report.longrepr)  # the text the JUnit report gets
    if failure_kind(crash.message if crash else traceback, traceback) is Outcome.ASSERTION:
        _session.shouldfail = f"mutation check: caught by {report.nodeid}"


if __name__ == "__main__":
    sys.exit(main())
