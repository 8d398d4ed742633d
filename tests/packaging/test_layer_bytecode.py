"""The built-layer check: a module Lambda would compile at every cold start is reported."""

from __future__ import annotations

import importlib.util
import py_compile
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _load_checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_layer_bytecode", REPO_ROOT / "scripts/check_layer_bytecode.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


checker = _load_checker()


def _run_checker(layer: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts/check_layer_bytecode.py"), str(layer)],
        capture_output=True,
        text=True,
        check=False,
    )


def _module(root: Path, name: str, mode: py_compile.PycInvalidationMode | None) -> Path:
    source = root / name
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text("VALUE = 1\n")
    if mode is not None:
        py_compile.compile(str(source), invalidation_mode=mode, doraise=True)
    return source


def test_given_unchecked_hash_bytecode_for_every_module_then_no_problem(tmp_path: Path):
    _module(tmp_path, "pkg/__init__.py", py_compile.PycInvalidationMode.UNCHECKED_HASH)
    _module(tmp_path, "pkg/deep/mod.py", py_compile.PycInvalidationMode.UNCHECKED_HASH)
    _module(tmp_path, "single.py", py_compile.PycInvalidationMode.UNCHECKED_HASH)

    assert checker.bytecode_problems(tmp_path) == []


@pytest.mark.parametrize(
    ("mode", "complaint"),
    [
        (None, "no mod.cpython"),
        (py_compile.PycInvalidationMode.TIMESTAMP, "timestamp-based"),
        (py_compile.PycInvalidationMode.CHECKED_HASH, "checked-hash"),
    ],
)
def test_given_a_module_without_usable_bytecode_then_it_is_named(tmp_path: Path, mode, complaint):
    _module(tmp_path, "pkg/__init__.py", py_compile.PycInvalidationMode.UNCHECKED_HASH)
    _module(tmp_path, "pkg/mod.py", mode)

    problems = checker.bytecode_problems(tmp_path)

    assert len(problems) == 1
    assert problems[0].startswith("pkg/mod.py: ") and complaint in problems[0]


def test_given_bytecode_from_another_python_version_then_it_is_named(tmp_path: Path):
    source = _module(tmp_path, "mod.py", py_compile.PycInvalidationMode.UNCHECKED_HASH)
    cached = Path(importlib.util.cache_from_source(str(source)))
    cached.write_bytes(b"\x00\x00\r\n" + cached.read_bytes()[4:])

    assert checker.bytecode_problems(tmp_path) == [f"mod.py: {cached.name} was compiled by another Python version"]


def test_given_a_module_edited_after_it_was_compiled_then_it_is_named(tmp_path: Path):
    source = _module(tmp_path, "mod.py", py_compile.PycInvalidationMode.UNCHECKED_HASH)
    source.write_text("VALUE = 2\n")  # Lambda would still run VALUE = 1

    cached = Path(importlib.util.cache_from_source(str(source)))
    assert checker.bytecode_problems(tmp_path) == [
        f"mod.py: {cached.name} was compiled from another version of the source"
    ]


def test_given_a_layer_with_one_stale_module_then_the_command_fails_and_says_which(tmp_path: Path):
    _module(tmp_path, "good.py", py_compile.PycInvalidationMode.UNCHECKED_HASH)
    _module(tmp_path, "bad.py", None)

    done = _run_checker(tmp_path)

    assert done.returncode == 1
    assert "bad.py: no bad.cpython" in done.stderr
    assert "1 of 2 modules" in done.stderr


def test_given_an_empty_directory_then_the_command_fails(tmp_path: Path):
    done = _run_checker(tmp_path)

    assert done.returncode == 1
    assert "no Python modules" in done.stderr
