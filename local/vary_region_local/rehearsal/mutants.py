"""`make rehearse-mutants`: IAM proved by running. Each mutant in iam_mutants.toml removes one
statement from a copy of template.yaml; the rehearsal deployed from that copy must fail, naming the
action the emulator (AUTH=true) denied. A mutant the rehearsal passes, or fails for another reason,
is a statement nothing proves needed (or a path the rehearsal does not run).

    python -m vary_region_local.rehearsal.mutants --ministack-python ... --sam ... --runtime-python ... [NAME ...]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
MUTANTS = Path(__file__).with_name("iam_mutants.toml")


@dataclass(frozen=True)
class IamMutant:
    name: str
    guarantee: str
    file: str
    find: str
    replace: str
    denied: str  # what the rehearsal's summary must say: "<function> denied <action>"


def load(path: Path = MUTANTS) -> list[IamMutant]:
    return [IamMutant(**entry) for entry in tomllib.loads(path.read_text())["mutant"]]


def mutated_copy(mutant: IamMutant, folder: Path) -> Path:
    text = (REPO_ROOT / mutant.file).read_text()
    count = text.count(mutant.find)
    if count != 1:
        raise SystemExit(f"{mutant.name}: its text occurs {count} times in {mutant.file}, not once")
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / Path(mutant.file).name
    copy.write_text(text.replace(mutant.find, mutant.replace))
    return copy


def run(mutant: IamMutant, tools: list[str], folder: Path) -> tuple[bool, str]:
    template = mutated_copy(mutant, folder / "template")
    log = folder / "rehearsal.log"
    command = [sys.executable, "-m", "vary_region_local.rehearsal", *tools]
    command += ["--template", str(template), "--state-dir", str(folder / "state")]
    started = time.monotonic()
    with log.open("w") as out:
        done = subprocess.run(command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, check=False)  # noqa: S603
    took = time.monotonic() - started
    for built in ("build", "cache"):  # 140 MB a mutant; the logs stay
        shutil.rmtree(folder / "state" / built, ignore_errors=True)
    summary = log.read_text(errors="replace").split("==> rehearsal summary", 1)[-1]
    failures = [line for line in summary.splitlines() if line.startswith("FAIL")]
    if done.returncode == 0:
        return False, f"SURVIVED: the rehearsal passed without the statement [{took:.0f}s]"
    if not any(mutant.denied in line for line in failures):
        shown = "; ".join(line[:200] for line in failures[:3]) or f"exit {done.returncode}, see {log}"
        return False, f"not caught: the rehearsal failed without naming '{mutant.denied}': {shown} [{took:.0f}s]"
    return True, f"caught: the rehearsal names '{mutant.denied}' [{took:.0f}s]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--ministack-python", required=True)
    parser.add_argument("--sam", required=True)
    parser.add_argument("--runtime-python", required=True)
    parser.add_argument("--state-dir", type=Path, default=REPO_ROOT / ".local" / "rehearse-mutants")
    args = parser.parse_args(argv)
    mutants = load()
    unknown = set(args.names) - {m.name for m in mutants}
    if unknown:
        raise SystemExit(f"unknown IAM mutants: {sorted(unknown)}")
    chosen = [m for m in mutants if not args.names or m.name in args.names]
    tools = ["--ministack-python", args.ministack_python, "--sam", args.sam, "--runtime-python", args.runtime_python]
    caught = 0
    for mutant in chosen:
        ok, detail = run(mutant, tools, args.state_dir / mutant.name)
        caught += ok
        print(f"{mutant.name}: {detail}", flush=True)
    print(f"{caught} of {len(chosen)} IAM mutants caught by the rehearsal")
    return 0 if caught == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
