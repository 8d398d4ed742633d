"""The manual's shell blocks as a reader meets them, and how a run's output is held against them.

A fenced block in README.md or docs/*.md whose language is a shell's (```bash, ```sh, ```console)
is run by test_docs_run.py unless an HTML comment right before it says otherwise:

    <!-- docs-test: skip (why it cannot run against the local stack) -->
    <!-- docs-test: transcript (why the `$` lines after the first are output) -->

A bash block is one script. A console block is a session: each `$ ` line a command, the lines
after it what it printed; the last of those is the command's key line, which the run must print
too, with its numbers (times, sizes, counts) free and its ids (job ids, task ids) bound to the
ones the run printed, so a later command of the page that names the shown id gets the real one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

SHELL_LANGUAGES = ("bash", "sh", "shell", "console", "shell-session")
VERBS = ("skip", "transcript")
_FENCE = re.compile(r"^(```|~~~)\s*([\w-]*)")
_MARKER = re.compile(r"^<!--\s*docs-test:\s*(\S+)\s*(?:\((.*)\))?\s*-->\s*$")
# What varies from run to run: the ids the pipeline and the simulator make up...
_ID = r"job-\d{8}-\d{6}-[0-9a-f]{6}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# ...and numbers: what a key line is matched with, token by token.
_TOKEN = re.compile(rf"(?P<id>{_ID})|(?P<number>\d+(?:\.\d+)?)|(?P<space>\s+)|(?P<other>.)")
_PLACEHOLDER = re.compile(r"<[A-Za-z][\w .-]*>")
_AWS_CLI = re.compile(r"(?:^|[;&|]|\$\()\s*(?:\$ )?aws\s", re.MULTILINE)


@dataclass(frozen=True)
class Command:
    line: int
    text: str
    shown: tuple[str, ...]  # what the page shows it printed

    @property
    def key_line(self) -> str | None:
        lines = [line for line in self.shown if line.strip()]
        return lines[-1] if lines else None


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # the fence's
    language: str
    text: str
    verb: str | None = None
    reason: str = ""

    def where(self, root: Path) -> str:
        return f"{self.page.relative_to(root)}:{self.line}"

    @property
    def is_console(self) -> bool:
        return self.language in ("console", "shell-session")

    def commands(self) -> list[Command]:
        """A console block's commands (the first only, with everything after it, for a transcript)."""
        commands: list[Command] = []
        current: list[str] | None = None
        output: list[str] = []
        start = 0
        for offset, line in enumerate(self.text.splitlines(), start=self.line + 1):
            if current is not None and not output and current[-1].endswith("\\"):  # the command goes on
                current.append(line)
            elif line.startswith("$ ") and not (self.verb == "transcript" and current is not None):
                if current is not None:
                    commands.append(Command(start, "\n".join(current), tuple(output)))
                current, output, start = [line[2:]], [], offset
            elif current is not None:
                output.append(line)
        if current is not None:
            commands.append(Command(start, "\n".join(current), tuple(output)))
        return commands


@dataclass
class MarkerError(Exception):
    where: str
    text: str


def read_blocks(page: Path) -> list[Block]:
    blocks: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    marker: re.Match[str] | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        fence = _FENCE.match(line.strip())
        if fence is None:
            if line.strip():
                marker = _MARKER.match(line.strip())
                if marker is None and line.strip().startswith("<!-- docs-test"):
                    raise MarkerError(f"{page.name}:{index + 1}", line)
            index += 1
            continue
        end = next((n for n in range(index + 1, len(lines)) if lines[n].strip().startswith(fence[1])), len(lines))
        language = fence[2].lower()
        if language in SHELL_LANGUAGES:
            verb, reason = (marker[1], marker[2] or "") if marker else (None, "")
            if verb is not None and (verb not in VERBS or not reason.strip()):
                raise MarkerError(f"{page.name}:{index + 1}", f"a marker needs a verb of {VERBS} and (a reason)")
            blocks.append(Block(page, index + 1, language, "\n".join(lines[index + 1 : end]), verb, reason))
        marker = None
        index = end + 1
    return blocks


@dataclass
class Bindings:
    """The ids a page showed, bound to the ones the run printed in their place."""

    ids: dict[str, str] = field(default_factory=dict)

    def apply(self, text: str) -> str:
        for shown, real in self.ids.items():
            text = text.replace(shown, real)
        return text

    def match_key_line(self, key_line: str, output: str) -> bool:
        """Whether `output` has a line like `key_line` (numbers free, unbound ids free); binds the ids."""
        pattern, unbound = self._pattern(self.apply(key_line))
        for line in output.splitlines():
            found = pattern.fullmatch(line.strip())
            if found:
                for group, shown in unbound.items():
                    self.ids.setdefault(shown, found[group])
                return True
        return False

    def _pattern(self, key_line: str) -> tuple[re.Pattern[str], dict[str, str]]:
        parts: list[str] = []
        unbound: dict[str, str] = {}
        for token in _TOKEN.finditer(key_line.strip()):
            kind, text = token.lastgroup, token[0]
            if kind == "id" and text not in self.ids.values():
                group = unbound.get(text) or f"id{len(unbound)}"
                parts.append(f"(?P={group})" if text in unbound else f"(?P<{group}>{_ID})")
                unbound.setdefault(text, group)
            elif kind == "number":
                parts.append(r"\d+(?:\.\d+)?")
            elif kind == "space":
                parts.append(r"\s+")
            else:
                parts.append(re.escape(text))
        return re.compile("".join(parts)), {group: shown for shown, group in unbound.items()}


def uses_aws_cli(text: str) -> bool:
    return _AWS_CLI.search(text) is not None


def placeholders(text: str) -> list[str]:
    """`<job-id>`-style placeholders a command still holds (shell redirections never look like one)."""
    return _PLACEHOLDER.findall(text)
