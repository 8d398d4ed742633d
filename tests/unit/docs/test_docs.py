"""The manual names only what exists: README.md and docs/*.md are read as a newcomer follows them.

Checked, in every page: each relative link leads to a file (and a heading, for `#anchor`s); each
repository path shown in code (inline or in a block) exists; each `make TARGET` is a target of the
Makefile; each `vary-region COMMAND` is a command of the CLI's parser, with options it takes; and
the guarantees page names every mutant of the mutation check. Plain text parsing, no subprocess:
the whole check takes a fraction of a second.
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import os
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from vary_region_cli.main import build_parser


def _repo_root() -> Path:
    # Found by walking up, so the test keeps working wherever the test tree puts it.
    here = Path(__file__).resolve()
    return next(folder for folder in here.parents if (folder / "pyproject.toml").is_file())


ROOT = _repo_root()
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# Files named without a folder are looked up anywhere in the repository; these kinds only (a bare
# `result.json` or `job.json` is a document the pipeline writes, not a file of the repository).
BARE_FILE_SUFFIXES = (".py", ".toml", ".yaml", ".md")
PATH_SUFFIXES = (*BARE_FILE_SUFFIXES, ".json")
BUCKET_FOLDERS = ("inbox", "results")  # `inbox/job-1/job.json` is a key in the jobs bucket
_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
_LINK = re.compile(r"(?<!\\)\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_PATH_TOKEN = re.compile(r"^[\w.*/-]+(?:::[\w\[\].-]+)?$")
_MAKE = re.compile(r"(?<![\w/.-])make\s+([a-z][\w-]*)")  # TARGET in capitals: a placeholder
_CLI = re.compile(r"(?<![\w/.-])(?:[\w./-]*/)?vary-region(?![\w-])")
_EDGE_PUNCTUATION = "\"'`,;:()[]{}"


@dataclass(frozen=True)
class Code:
    """A piece of code a page shows: an inline span or one logical line of a block."""

    page: Path
    line: int
    text: str

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


@dataclass(frozen=True)
class Page:
    path: Path
    prose: list[tuple[int, str]]  # paragraphs outside code blocks, with their first line's number
    code: list[Code]
    headings: list[str]


@cache
def read_page(path: Path) -> Page:
    prose: list[tuple[int, str]] = []
    code: list[Code] = []
    headings: list[str] = []
    paragraph: list[str] = []
    start = 0
    fence: str | None = None
    block_line, block = 0, ""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        marker = _FENCE.match(line)
        if fence is not None:
            if marker and marker[1] == fence:
                fence = None
            elif line.rstrip().endswith("\\"):  # a shell line continued: one command
                block_line, block = block_line or number, block + line.rstrip()[:-1] + " "
            else:
                code.append(Code(path, block_line or number, block + line))
                block_line, block = 0, ""
            continue
        if marker:
            fence = marker[1]
        heading = _HEADING.match(line)
        if heading:
            headings.append(heading[2])
        if marker or not line.strip():
            if paragraph:
                prose.append((start, "\n".join(paragraph)))
            paragraph = []
            continue
        if not paragraph:
            start = number
        paragraph.append(line)
    if paragraph:
        prose.append((start, "\n".join(paragraph)))
    for first_line, text in prose:
        for span in _CODE_SPAN.finditer(text):
            code.append(Code(path, first_line + text.count("\n", 0, span.start()), span[2].strip()))
    return Page(path, prose, code, headings)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for heading in read_page(path).headings:
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


# --- what the repository holds ------------------------------------------------------------------


@cache
def ignored_patterns() -> tuple[str, ...]:
    lines = (ROOT / ".gitignore").read_text().splitlines()
    return tuple(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def is_ignored(relative: str) -> bool:
    """Whether .gitignore keeps `relative` (or a folder above it) out of the repository."""
    parts = relative.strip("/").split("/")
    for pattern in ignored_patterns():
        anchored = pattern.strip("/")
        if "/" in anchored or pattern.startswith("/"):
            if any(fnmatch.fnmatch("/".join(parts[:n]), anchored) for n in range(1, len(parts) + 1)):
                return True
        elif any(fnmatch.fnmatch(part, anchored) for part in parts):
            return True
    return False


@cache
def package_folders() -> dict[str, Path]:
    """Python package name -> its folder, as pyproject.toml maps them (`vary_region/...` paths)."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {name: ROOT / folder for name, folder in setuptools.get("package-dir", {}).items() if "." not in name}


@cache
def top_level_folders() -> frozenset[str]:
    names = {entry.name for entry in ROOT.iterdir() if entry.is_dir() and entry.name != ".git"}
    return frozenset(name for name in names if not is_ignored(name))


@cache
def file_names() -> frozenset[str]:
    names: set[str] = set()
    for folder, subfolders, files in os.walk(ROOT):
        relative = Path(folder).relative_to(ROOT).as_posix()
        subfolders[:] = [
            name
            for name in subfolders
            if name != ".git" and not is_ignored(name if relative == "." else f"{relative}/{name}")
        ]
        names.update(files)
    return frozenset(names)


def resolve(path: str) -> Path | None:
    """The file or folder a path with a `/` names, or None where it starts with no repository folder."""
    first = path.split("/", 1)[0]
    if first in top_level_folders():
        return ROOT / path
    if first in package_folders():
        return package_folders()[first] / path.split("/", 1)[1]
    return None


def exists(target: Path, path: str) -> bool:
    if "*" in path:
        return bool(glob.glob(str(target)))
    return target.is_dir() if path.endswith("/") else target.exists()


# --- the checks ---------------------------------------------------------------------------------


def all_code() -> Iterator[Code]:
    for page in PAGES:
        yield from read_page(page).code


def path_problems(code: Code) -> Iterator[str]:
    for raw in code.text.split():
        token = raw.strip(_EDGE_PUNCTUATION).rstrip(".")
        if not token or not _PATH_TOKEN.match(token) or token.startswith(("/", "-")):
            continue
        path, _, test = token.partition("::")
        if "/" not in path:
            if path.endswith(BARE_FILE_SUFFIXES) and "*" not in path and path not in file_names():
                yield f"{code.where()}: `{path}`: no file of that name in the repository"
            continue
        if is_ignored(path):  # made by a run (.local/, demo-output/, results/), not part of the repository
            continue
        target = resolve(path)
        if target is None:
            if path.endswith(PATH_SUFFIXES) and path.split("/", 1)[0] not in BUCKET_FOLDERS:
                yield f"{code.where()}: `{path}`: starts with no folder of the repository (name it from the root)"
            continue
        if not exists(target, path):
            yield f"{code.where()}: `{path}` does not exist"
        elif test and target.is_file() and not re.search(rf"def {re.escape(test)}\b", target.read_text()):
            yield f"{code.where()}: `{token}`: {path} has no test {test}"


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, re.MULTILINE))


@cache
def cli_commands() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = build_parser()
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    return parser, dict(commands.choices)


def takes_value(parser: argparse.ArgumentParser, option: str) -> bool:
    action = parser._option_string_actions.get(option)
    return action is not None and action.nargs != 0


def cli_problems(code: Code) -> Iterator[str]:
    top, commands = cli_commands()
    for match in _CLI.finditer(code.text):
        before = code.text[: match.start()].split()
        if before and before[-1].startswith("-"):  # the value of an option, e.g. --stack-name vary-region
            continue
        tokens = code.text[match.end() :].split()
        while tokens and tokens[0].startswith("-"):
            option = tokens.pop(0)
            if option.split("=", 1)[0] not in top._option_string_actions:
                yield f"{code.where()}: `vary-region {option}`: no such option before the command"
            elif "=" not in option and takes_value(top, option) and tokens:
                tokens.pop(0)
        if not tokens or not re.fullmatch(r"[a-z][\w-]*", tokens[0]):
            continue  # the tool named, no command shown
        name = tokens.pop(0)
        command = commands.get(name)
        if command is None:
            yield f"{code.where()}: `vary-region {name}`: no such command (the CLI has {', '.join(sorted(commands))})"
            continue
        for token in tokens:
            if token in ("|", ">", "&&", ";", "2>&1") or token.startswith(("#", ">")):
                break
            option = token.split("=", 1)[0]
            if option.startswith("--") and option not in command._option_string_actions:
                yield f"{code.where()}: `vary-region {name} {option}`: {name} has no such option"


def test_the_readme_shows_the_two_commands_and_stays_a_front_door() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    lines = readme.count("\n")
    assert lines <= 250, f"README.md has {lines} lines: keep it the front door and put the rest in docs/"


def test_every_relative_link_leads_to_a_file_and_heading() -> None:
    problems = []
    for page in PAGES:
        for first_line, text in read_page(page).prose:
            text = _CODE_SPAN.sub(lambda span: " " * len(span[0]), text)
            for link in _LINK.finditer(text):
                target = link[1]
                if _SCHEME.match(target):
                    continue
                where = f"{page.relative_to(ROOT)}:{first_line + text.count(chr(10), 0, link.start())}"
                file_part, _, anchor = target.partition("#")
                linked = (page.parent / file_part).resolve() if file_part else page
                if not linked.exists():
                    problems.append(f"{where}: ({target}): {file_part} does not exist")
                elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                    problems.append(f"{where}: ({target}): {linked.relative_to(ROOT)} has no heading #{anchor}")
    assert not problems, "broken links in the docs:\n" + "\n".join(problems)


def test_every_repository_path_the_docs_show_exists() -> None:
    problems = [problem for code in all_code() for problem in path_problems(code)]
    assert not problems, "paths in the docs that the repository does not have:\n" + "\n".join(problems)


def test_every_make_target_the_docs_show_exists() -> None:
    targets = make_targets()
    problems = [
        f"{code.where()}: `make {name}`: no such target in the Makefile"
        for code in all_code()
        for name in _MAKE.findall(code.text)
        if name not in targets
    ]
    assert not problems, "make targets the docs show and the Makefile lacks:\n" + "\n".join(problems)


def test_every_cli_command_the_docs_show_exists() -> None:
    problems = [problem for code in all_code() for problem in cli_problems(code)]
    assert not problems, "vary-region commands or options the docs show and the CLI lacks:\n" + "\n".join(problems)


def test_every_mutant_is_on_the_guarantees_page_and_every_mutant_named_there_exists() -> None:
    mutants = {
        entry["name"]: path.relative_to(ROOT).as_posix()
        for path in sorted((ROOT / "scripts" / "mutants").glob("*.toml"))
        for entry in tomllib.loads(path.read_text())["mutant"]
    }
    page = ROOT / "docs" / "guarantees.md"
    text = page.read_text()
    # A mutant is named, or its file is ("the 12 in scripts/mutants/intake.toml (...)").
    missing = [
        f"{name} ({file})" for name, file in mutants.items() if f"`{name}`" not in text and f"`{file}`" not in text
    ]
    named = {
        token
        for row in text.splitlines()
        if row.startswith("| ") and not row.startswith("| ---")
        for token in re.findall(r"`([a-z0-9]+(?:-[a-z0-9]+)+)`", row.rstrip(" |").rsplit(" | ", 1)[-1])
    }
    unknown = sorted(named - set(mutants))
    assert not missing and not unknown, (
        f"mutants that {page.relative_to(ROOT)} does not name: {missing}; "
        f"names in its mutants column that are no mutant: {unknown}"
    )


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Capacity: 100,000 jobs a day, 10,000 in one hour", "capacity-100000-jobs-a-day-10000-in-one-hour"),
        ("APIFRAME v1 or v2", "apiframe-v1-or-v2"),
        ("Job states (one DynamoDB item per job, key `job_id`)", "job-states-one-dynamodb-item-per-job-key-job_id"),
    ],
)
def test_a_heading_gets_githubs_anchor(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor
