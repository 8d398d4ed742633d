"""The mutation check's verdicts: a mutant is caught only when a test that passed unmutated fails
with it on an assertion; an error, a time-out, a crash or a test that was failing already is not a catch."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKER = REPO_ROOT / "scripts/mutation_check.py"


def _load_checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutation_check", CHECKER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


check = _load_checker()
Outcome = check.Outcome
FILES = {"tests/integration/test_jobs.py", "tests/unit/test_mask.py"}


def _junit(*cases: str) -> str:
    """A JUnit report as pytest writes it (--junitxml, the default xunit2 family)."""
    return (
        '<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest" '
        f'errors="0" failures="0" skipped="0" tests="{len(cases)}">{"".join(cases)}</testsuite></testsuites>'
    )


def _case(name: str, body: str = "", classname: str = "tests.integration.test_jobs") -> str:
    return f'<testcase classname="{classname}" name="{name}" time="0.1">{body}</testcase>'


def _failure(message: str, raised_at: str, name: str = "test_a") -> str:
    """A test whose call failed: pytest's one-line message, and its traceback ending where it was raised."""
    escaped = message.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    kind = message.split(":")[0] if ":" in message else "AssertionError"
    body = f"def {name}():\n&gt;       ...\nE       {escaped}\n\n{raised_at}: {kind.split('.')[-1]}"
    return _case(name, f'<failure message="{escaped}">{body}</failure>')


def _error(message: str, name: str = "test_a") -> str:
    return _case(name, f'<error message="{message.replace(chr(34), "&quot;")}">traceback</error>')


PASSED = _case("test_a")
ASSERTION = _failure("assert 'FAILED' == 'COMPLETED'", "tests/integration/test_jobs.py:12")
HELPER_ASSERTION = _failure("AssertionError: job j did not reach ('COMPLETED',) in 20s", "tests/builders.py:88")
SETUP_ERROR = _error('failed on setup with "RuntimeError: no stack"')
TEARDOWN_ERROR = _error('failed on teardown with "KeyError: x"')
TIMEOUT = _failure("Failed: Timeout (>120.0s) from pytest-timeout.", "tests/builders.py:138")
RAISED = _failure(
    "botocore.exceptions.ClientError: An error occurred (ValidationException)",
    "layers/vary_region/vary_region/store/job_table.py:300",
)
CODE_ASSERTION = _failure("AssertionError: unreachable", "layers/vary_region/vary_region/completion/worker.py:186")
DID_NOT_RAISE = _failure("Failed: DID NOT RAISE <class 'ValueError'>", "tests/integration/test_jobs.py:40")
SKIPPED = _case("test_a", '<skipped type="pytest.skip" message="v1 only">tests/x.py:3: v1 only</skipped>')
TEST_A = "tests/integration/test_jobs.py::test_a"


def _verdict(mutant_run: str, baseline: str = _junit(PASSED)) -> Any:
    counted = check.passed_tests(check.read_junit(baseline, FILES))
    return check.judge(check.read_junit(mutant_run, FILES), counted)


def test_an_assertion_failure_of_a_test_that_passed_unmutated_is_a_catch_naming_the_test():
    verdict = _verdict(_junit(ASSERTION))

    assert verdict.caught
    assert TEST_A in verdict.detail and "assert 'FAILED' == 'COMPLETED'" in verdict.detail


@pytest.mark.parametrize("case", [HELPER_ASSERTION, DID_NOT_RAISE], ids=["helper-assertion", "did-not-raise"])
def test_an_assertion_of_the_tests_own_helpers_or_of_pytest_raises_is_a_catch(case):
    assert _verdict(_junit(case)).caught


@pytest.mark.parametrize(
    ("case", "why"),
    [
        (SETUP_ERROR, "errored"),
        (TEARDOWN_ERROR, "errored"),
        (TIMEOUT, "timed out"),
        (RAISED, "raised"),
        (CODE_ASSERTION, "raised"),  # an assert of the code under test that fires is a crash
    ],
    ids=["setup-error", "teardown-error", "timeout", "raised", "assert-in-code-under-test"],
)
def test_an_error_a_time_out_or_a_crash_is_not_a_catch(case, why):
    verdict = _verdict(_junit(case))

    assert not verdict.caught
    assert verdict.detail.startswith("not caught") and f"{TEST_A} {why}" in verdict.detail


def test_a_test_that_failed_in_the_baseline_is_not_counted_even_when_it_fails_on_an_assertion():
    verdict = _verdict(_junit(ASSERTION), baseline=_junit(ASSERTION))

    assert not verdict.caught
    assert "not counted" in verdict.detail


def test_a_test_that_errored_or_was_skipped_in_the_baseline_is_not_counted():
    for baseline in (SETUP_ERROR, TEARDOWN_ERROR, SKIPPED):
        assert not _verdict(_junit(ASSERTION), baseline=_junit(baseline)).caught


def test_a_mutant_every_counted_test_passes_with_survived():
    verdict = _verdict(_junit(PASSED, _case("test_b", classname="tests.integration.test_jobs")))

    assert not verdict.caught and verdict.detail.startswith("SURVIVED")


def test_a_catch_counts_even_when_other_tests_of_the_mutant_errored():
    other = _error('failed on setup with "OSError"', name="test_b")
    baseline = _junit(PASSED, _case("test_b"))

    assert _verdict(_junit(other, ASSERTION), baseline).caught


def test_a_test_passes_in_the_baseline_only_if_it_passed_in_every_report_that_ran_it():
    suite = check.read_junit(_junit(PASSED, _case("test_b")), FILES)
    scratch = check.read_junit(_junit(_failure("assert 0", "tests/integration/test_jobs.py:3", name="test_b")), FILES)

    assert check.passed_tests(suite, scratch) == {TEST_A}


def test_node_ids_are_rebuilt_from_the_report_with_classes_and_parameters():
    report = _junit(
        _case("test_b[a.b::c]", classname="tests.integration.test_jobs.TestChains"),
        _case("tests.unit.test_mask", '<error message="collection failure">traceback</error>', classname=""),
    )

    tests = [r.test for r in check.read_junit(report, FILES)]

    assert tests == ["tests/integration/test_jobs.py::TestChains::test_b[a.b::c]", "tests/unit/test_mask.py"]


def test_a_mutant_counts_the_tests_its_specs_select():
    mutant = check.Mutant("m", "g", "f", "find", "replace", ("tests/unit/test_mask.py", "tests/integration/x.py::t"))
    baseline = {
        "tests/unit/test_mask.py::test_one",
        "tests/unit/test_mask.py::C::test_two[p]",
        "tests/unit/test_mask_regions.py::test_three",
        "tests/integration/x.py::t[1]",
        "tests/integration/x.py::t_other",
    }

    assert check.counted_tests(mutant, baseline) == {
        "tests/unit/test_mask.py::test_one",
        "tests/unit/test_mask.py::C::test_two[p]",
        "tests/integration/x.py::t[1]",
    }


def test_the_scratch_baseline_runs_each_named_test_once_or_after_make_test_only_a_proof_of_the_copy():
    def mutant(*tests: str) -> object:
        return check.Mutant("m", "g", "f", "find", "replace", tests)

    mutants = [
        mutant("tests/unit/test_mask.py::test_one", "tests/integration/test_a.py"),
        mutant("tests/unit/test_mask.py"),
        mutant("tests/integration/test_b.py", "tests/integration/test_a.py::test_x"),
        mutant("tests/e2e/test_c.py::test_y"),
        mutant("tests/e2e/test_d.py"),
    ]

    assert check.scratch_specs(mutants, suite_passed=False) == [
        "tests/integration/test_a.py",
        "tests/unit/test_mask.py",
        "tests/integration/test_b.py",
        "tests/e2e/test_c.py::test_y",
        "tests/e2e/test_d.py",
    ]
    assert check.scratch_specs(mutants, suite_passed=True) == [
        "tests/unit/test_mask.py",
        "tests/integration/test_a.py",
        "tests/e2e/test_c.py::test_y",
    ]


def test_a_mutant_none_of_whose_tests_passed_unmutated_is_an_error_of_the_check_and_is_not_run(monkeypatch):
    mutant = check.Mutant("m", "g", "scripts/mutation_check.py", "REPO = Path(", "x", ("tests/unit/test_mask.py",))
    monkeypatch.setattr(check, "run_tests", lambda *a, **k: pytest.fail("a mutant nothing can catch was run"))

    verdict = check.run_mutant(mutant, [], {"tests/unit/test_other.py::test_a"})

    assert not verdict.caught and verdict.detail.startswith("ERROR of the check")


def test_the_suite_report_is_refused_when_missing_or_written_on_another_tree(tmp_path):
    report = tmp_path / "test-results.xml"
    with pytest.raises(SystemExit, match="no report"):
        check.suite_baseline(report, "state-1", FILES)

    report.write_text(_junit(PASSED))
    (tmp_path / "test-results.xml.tree").write_text("state-0\n")
    with pytest.raises(SystemExit, match="another state of the tree"):
        check.suite_baseline(report, "state-1", FILES)

    (tmp_path / "test-results.xml.tree").write_text("state-1\n")
    assert [r.test for r in check.suite_baseline(report, "state-1", FILES)] == [TEST_A]


def test_a_mutants_run_ends_at_its_first_catch_but_not_at_an_error_or_an_uncounted_failure(tmp_path):
    """The plugin in a real pytest run: the run goes on past an error and past a failure of a test
    that is not counted, and ends at the first counted assertion failure."""
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_sample.py").write_text(
        "import pytest\n\n"
        "@pytest.fixture\ndef broken():\n    raise RuntimeError('no stack')\n\n"
        "def test_1_errors(broken):\n    pass\n\n"
        "def test_2_was_failing_already():\n    assert False\n\n"
        "def test_3_raises():\n    raise KeyError('k')\n\n"
        "def test_4_catches():\n    assert 1 == 2\n\n"
        "def test_5_never_runs():\n    pass\n"
    )
    counted = tmp_path / "counted.txt"
    counted.write_text("".join(f"tests/test_sample.py::test_{n}\n" for n in ("1_errors", "3_raises", "4_catches")))
    report = tmp_path / "results.xml"
    env = dict(os.environ, PYTHONPATH=str(CHECKER.parent), **{check.COUNTED_ENV: str(counted)})
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "mutation_check"]
    subprocess.run([*command, f"--junitxml={report}", "tests"], cwd=tmp_path, env=env, capture_output=True, check=False)

    results = check.read_junit(report.read_text(), {"tests/test_sample.py"})

    assert [(r.test.split("::")[1], r.outcome) for r in results] == [
        ("test_1_errors", Outcome.ERROR),
        ("test_2_was_failing_already", Outcome.ASSERTION),
        ("test_3_raises", Outcome.RAISED),
        ("test_4_catches", Outcome.ASSERTION),
    ]
    assert check.judge(results, counted.read_text().split()).detail.startswith(
        "caught by tests/test_sample.py::test_4_catches"
    )


def test_a_mutant_whose_code_moved_is_found_by_its_text_and_says_so(tmp_path, monkeypatch):
    (tmp_path / "layers/pkg").mkdir(parents=True)
    (tmp_path / "layers/pkg/new_home.py").write_text("x = 1\nif claimed:\n    pay()\n")
    (tmp_path / "layers/pkg/other.py").write_text("y = 2\n")
    monkeypatch.setattr(check, "REPO", tmp_path)
    files = ["layers/pkg/new_home.py", "layers/pkg/other.py"]
    moved = check.Mutant("m", "g", "layers/pkg/old_home.py", "if claimed:", "if True:", ("tests/unit/x.py",))

    path, note = check.locate(moved, files)

    assert path == "layers/pkg/new_home.py"
    assert "moved" in note and "layers/pkg/old_home.py" in note


def test_a_mutant_whose_text_is_in_no_file_or_in_two_is_an_error_naming_where(tmp_path, monkeypatch):
    (tmp_path / "layers").mkdir()
    (tmp_path / "layers/a.py").write_text("if claimed:\n")
    (tmp_path / "layers/b.py").write_text("if claimed:\n")
    monkeypatch.setattr(check, "REPO", tmp_path)
    twice = check.Mutant("m", "g", "layers/gone.py", "if claimed:", "if True:", ("tests/unit/x.py",))
    nowhere = check.Mutant("n", "g", "layers/gone.py", "if paid:", "if True:", ("tests/unit/x.py",))

    assert check.locate(twice, ["layers/a.py", "layers/b.py"]) == (
        None,
        "its text must occur exactly once, in one file; found in layers/a.py (1x), layers/b.py (1x) "
        "(the toml names layers/gone.py)",
    )
    path, note = check.locate(nowhere, ["layers/a.py", "layers/b.py"])
    assert path is None and "no source file" in note


def test_a_test_grouped_by_xdist_in_the_baseline_is_the_same_test_as_in_a_mutant_run():
    grouped = (
        '<testcase classname="tests.integration.test_jobs" name="test_a[x]@tests/integration/test_jobs.py" time="1"/>'
    )
    plain = '<testcase classname="tests.integration.test_jobs" name="test_a[x]" time="1"/>'

    baseline = check.read_junit(_junit(grouped), FILES)
    mutant_run = check.read_junit(_junit(plain), FILES)

    assert [case.test for case in baseline] == [case.test for case in mutant_run]
    assert baseline[0].test == "tests/integration/test_jobs.py::test_a[x]"
