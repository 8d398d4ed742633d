"""Mutation check for the guarantees: break each mechanism on purpose and require a test to fail.

Every mutant in scripts/mutants/*.toml names one mechanism behind a guarantee the README sells
(the claim condition, the secret check, the Fetch confirmation, ...), the exact text that
implements it and what to put instead, and the tests that prove the guarantee. The check copies
the tracked tree to a scratch folder, applies one mutant there and runs its tests: they must fail,
every time. A mutant whose text no longer matches exactly once fails the check too, so the list
cannot silently fall behind the code.

    python scripts/mutation_check.py                # every mutant
    python scripts/mutation_check.py NAME ...       # only these
    python scripts/mutation_check.py --suite-passed # after `make test` on this same tree (CI)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MUTANT_FILES = REPO / "scripts" / "mutants"
# Import roots of the editable install; put first on sys.path so the scratch copy is what runs.
IMPORT_ROOTS = ("layers/vary_region", "local", "cli", ".")


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


def run_tests(tests: tuple[str, ...], files: list[str], change: tuple[str, str, str] | None) -> tuple[int, str, float]:
    """Run `tests` in a scratch copy of the tree, with `change` (file, find, replace) applied if given:
    (pytest's exit code, its last line, seconds)."""
    with tempfile.TemporaryDirectory(prefix="mutation-check-") as scratch:
        root = Path(scratch)
        for name in files:
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target)
        if change is not None:
            path, find, replace = change
            (root / path).write_text((REPO / path).read_text().replace(find, replace))
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join(str(root / p) for p in IMPORT_ROOTS), PYTHONDONTWRITEBYTECODE="1"
        )
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header"]
        command += ["-o", "addopts=", *tests]
        started = time.monotonic()
        result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=900)
        last = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
        if result.returncode not in (0, 1):
            last += "\n" + result.stderr[-2000:]
        return result.returncode, last, time.monotonic() - started


# pytest's summary line counts set-up and tear-down errors apart from failed tests ("1 failed, 1 error").
_ERRORS = re.compile(r"\b\d+ errors?\b")


def run_mutant(mutant: Mutant, files: list[str]) -> tuple[bool, str]:
    """(passed, detail): passed means at least one of its tests failed with the mutant applied."""
    text = (REPO / mutant.file).read_text()
    if text.count(mutant.find) != 1:
        return False, f"its text occurs {text.count(mutant.find)} times in {mutant.file} (must be exactly once)"
    code, last, took = run_tests(mutant.tests, files, (mutant.file, mutant.find, mutant.replace))
    if code == 1 and _ERRORS.search(last):  # a fixture or the stack broke: says nothing about the mutant
        return False, f"its tests errored instead of failing (a broken set-up, not a caught mutant): {last}"
    if code == 1:  # tests ran and at least one failed: the mutant was caught
        return True, f"caught in {took:.0f}s: {last}"
    if code == 0:
        return False, f"SURVIVED: every test passed with the mechanism broken ({last})"
    return False, f"its tests could not run (pytest exit {code}): {last}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument(
        "--suite-passed",
        action="store_true",
        help="the whole suite has just passed on this tree (make test): three baselines, not each mutant's",
    )
    args = parser.parse_args(argv)
    mutants = load_mutants()
    if args.names:
        unknown = set(args.names) - {m.name for m in mutants}
        if unknown:
            raise SystemExit(f"unknown mutants: {sorted(unknown)}")
        mutants = [m for m in mutants if m.name in args.names]
    files = tracked_files()
    failures = 0
    # The same tests on the unchanged tree must pass first: a broken environment or a flaky test
    # would otherwise make every mutant look caught. After a green `make test` on this tree they
    # have passed already, so three baselines prove the scratch copy runs them: every unit test a
    # mutant names, in one run (seconds), and the first tests that start the stack in pytest's
    # process (tests/integration) and as a user does (tests/e2e). A set-up that breaks for one
    # mutant's tests only errors, which counts as not caught (run_mutant). That saves about six
    # minutes of CI.
    baselines = list(dict.fromkeys(m.tests for m in mutants))
    if args.suite_passed:
        unit = tuple(dict.fromkeys(test for tests in baselines for test in tests if test.startswith("tests/unit/")))
        firsts = (
            next((tests for tests in baselines if any(test.startswith(suite) for test in tests)), None)
            for suite in ("tests/integration/", "tests/e2e/")
        )
        baselines = [tests for tests in (unit or None, *firsts) if tests]
    for tests in baselines:
        code, last, took = run_tests(tests, files, None)
        verdict = "ok  " if code == 0 else "FAIL"
        print(f"{verdict} baseline {' '.join(tests)}: exit {code} in {took:.0f}s: {last}", flush=True)
        failures += code != 0
    if failures:
        print("mutation check: the tests fail without any mutant; no mutant was run", flush=True)
        return 1
    for mutant in mutants:
        passed, detail = run_mutant(mutant, files)
        failures += not passed
        print(f"{'ok  ' if passed else 'FAIL'} {mutant.name} ({mutant.guarantee}): {detail}", flush=True)
    print(f"mutation check: {len(mutants) - failures} of {len(mutants)} mutants caught", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
