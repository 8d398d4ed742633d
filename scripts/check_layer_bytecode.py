"""Checks that a built layer ships bytecode Lambda will actually use.

Lambda's /opt is read-only, so a module without a usable .pyc is compiled from source on every
cold start. A .pyc is usable there only if it was made by the runtime's Python version and does
not depend on the source's timestamp (SAM zips every file dated 1980). Run it with the runtime's
interpreter (python3.13):

    python3.13 scripts/check_layer_bytecode.py .aws-sam/build/SharedLayer/python
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

# PEP 552: the .pyc header's flags word. Bit 0 set = hash-based, bit 1 set = check the source.
_HASH_BASED = 0b01
_CHECK_SOURCE = 0b10


def bytecode_problems(root: Path) -> list[str]:
    """One line per module under root that Lambda would have to compile at cold start."""
    problems = []
    for source in sorted(root.rglob("*.py")):
        cached = Path(importlib.util.cache_from_source(str(source)))
        where = source.relative_to(root)
        if not cached.is_file():
            problems.append(f"{where}: no {cached.name}")
            continue
        header = cached.read_bytes()[:16]
        if header[:4] != importlib.util.MAGIC_NUMBER:
            problems.append(f"{where}: {cached.name} was compiled by another Python version")
            continue
        flags = int.from_bytes(header[4:8], "little")
        if not flags & _HASH_BASED:
            problems.append(f"{where}: timestamp-based .pyc (stale once SAM zips the layer)")
        elif flags & _CHECK_SOURCE:
            problems.append(f"{where}: checked-hash .pyc (re-reads and hashes the source on every cold start)")
        elif header[8:16] != importlib.util.source_hash(source.read_bytes()):
            # Nothing checks an unchecked-hash .pyc at run time: it would run the old code.
            problems.append(f"{where}: {cached.name} was compiled from another version of the source")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} <layer python directory>", file=sys.stderr)
        return 2
    root = Path(argv[1])
    modules = sum(1 for _ in root.rglob("*.py"))
    if modules == 0:
        print(f"error: no Python modules under {root}", file=sys.stderr)
        return 1
    problems = bytecode_problems(root)
    for line in problems[:20]:
        print(f"error: {line}", file=sys.stderr)
    if problems:
        print(f"error: {len(problems)} of {modules} modules would be compiled at every cold start", file=sys.stderr)
        return 1
    print(f"layer bytecode: all {modules} modules ship an unchecked-hash .pyc for this Python")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
