"""Cold import time of each function's handler module, against importing boto3 alone.

Each import runs in a fresh interpreter, the way the Lambda runtime starts one, on the code as it
is deployed: the layer built by its own recipe (layers/vary_region/Makefile, here with wheels for
this machine), the handler file as SAM copies it, both read-only (no bytecode is written), the
function's environment from template.yaml (placeholders for what CloudFormation resolves at deploy
time, fake credentials as Lambda injects them, X-Ray tracing on as `Tracing: Active` turns it on),
and `python -X importtime`. The figure is the sum of the top-level cumulative times printed after a
marker, so the interpreter's own start-up imports (site, encodings) count for neither side.

The same layer without its bytecode (what SAM's python builder would ship) is timed too: that is
what every cold start paid before the layer shipped compiled files.
"""

from __future__ import annotations

import os
import pstats
import re
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vary_region_local import template
from vary_region_local.template import Variable

from bench.report import Figure, Section

REPO_ROOT = Path(__file__).resolve().parents[1]
LAYER = REPO_ROOT / "layers" / "vary_region"
TARGET_RATIO = 1.5
_MARKER = "-- bench: imports under test start here --"
_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( +)(\S.*)$")
# Values CloudFormation would resolve (!Sub, !Ref to resources, !If): realistic shapes, so the
# settings parse exactly as in AWS.
_PLACEHOLDERS = {
    "JOBS_BUCKET": "vary-region-jobs-123456789012-us-east-1",
    "JOBS_TABLE": "vary-region-jobs",
    "APIFRAME_API_KEY_SECRET_ID": "arn:aws:secretsmanager:us-east-1:123456789012:secret:vary-region/apiframe-AbCdEf",
    "WEBHOOK_BASE_URL": "https://abcdef1234.execute-api.us-east-1.amazonaws.com/webhook",
    "SUBMIT_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/vary-region-submit",
}


# ---- importtime output ----------------------------------------------------------------------------
@dataclass
class ImportNode:
    name: str
    self_us: int
    cumulative_us: int
    children: list[ImportNode] = field(default_factory=list)


def parse_importtime(stderr: str) -> list[ImportNode]:
    """The import trees printed after the marker. importtime prints a module after its children
    (post-order), indented two spaces per level: a module adopts the pending entries one level deeper."""
    _, found, tail = stderr.partition(_MARKER)
    if not found:
        raise ValueError(f"no import marker in the output:\n{stderr[-2000:]}")
    pending: dict[int, list[ImportNode]] = {}
    for line in tail.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        self_us, cumulative_us, indent, name = match.groups()
        depth = (len(indent) - 1) // 2
        node = ImportNode(name.strip(), int(self_us), int(cumulative_us), pending.pop(depth + 1, []))
        pending.setdefault(depth, []).append(node)
    return pending.get(0, [])


def total_ms(roots: list[ImportNode]) -> float:
    return sum(root.cumulative_us for root in roots) / 1000


def dominant_imports(roots: list[ImportNode], share: float = 0.05, max_depth: int = 4) -> list[str]:
    """The tree pruned to the modules that take at least `share` of the total, as indented lines."""
    floor = share * sum(root.cumulative_us for root in roots)
    lines: list[str] = []

    def walk(node: ImportNode, depth: int) -> None:
        if node.cumulative_us < floor or depth > max_depth:
            return
        cumulative_ms, self_ms = node.cumulative_us / 1000, node.self_us / 1000
        lines.append(f"{'  ' * depth}{node.name}: {cumulative_ms:.0f} ms (self {self_ms:.0f} ms)")
        for child in sorted(node.children, key=lambda c: -c.cumulative_us):
            walk(child, depth + 1)

    for root in sorted(roots, key=lambda r: -r.cumulative_us):
        walk(root, 0)
    return lines


def self_ms_by_package(roots: list[ImportNode]) -> dict[str, float]:
    """Every module's own time, summed per top-level package: an exact split of the total."""
    totals: dict[str, float] = {}

    def walk(node: ImportNode) -> None:
        package = node.name.split(".")[0]
        totals[package] = totals.get(package, 0.0) + node.self_us / 1000
        for child in node.children:
            walk(child)

    for root in roots:
        walk(root)
    return totals


def excess_by_package(handler: list[ImportNode], baseline: list[ImportNode]) -> dict[str, float]:
    """What the handler's import costs beyond `import boto3`, per package, largest first."""
    mine, theirs = self_ms_by_package(handler), self_ms_by_package(baseline)
    excess = {package: ms - theirs.get(package, 0.0) for package, ms in mine.items()}
    return dict(sorted(excess.items(), key=lambda item: -item[1]))


# ---- the functions, as template.yaml declares them --------------------------------------------------
@dataclass(frozen=True)
class LambdaFunction:
    name: str  # the folder under functions/
    module: str  # what the runtime imports (from Handler "app.lambda_handler")
    environment: dict[str, str]

    @property
    def source(self) -> Path:
        return REPO_ROOT / "functions" / self.name


def _resolve(variable: Variable) -> str:
    if variable.name in _PLACEHOLDERS:
        return _PLACEHOLDERS[variable.name]
    if variable.parameter is not None:
        return variable.parameter_default or ""
    return variable.literal if variable.literal is not None else f"bench-placeholder-{variable.name.lower()}"


def template_functions() -> list[LambdaFunction]:
    functions = []
    for deployed in template.functions().values():
        environment = {name: _resolve(variable) for name, variable in deployed.environment.items()}
        environment |= {
            "AWS_LAMBDA_FUNCTION_NAME": f"vary-region-{deployed.folder}",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(deployed.memory_mb),
        }
        functions.append(LambdaFunction(deployed.folder, deployed.handler.rsplit(".", 1)[0], environment))
    return sorted(functions, key=lambda f: f.name)


@dataclass(frozen=True)
class DeployedCode:
    """Where the deployed code lives for the measurement: the layer's /opt/python and /var/task."""

    layer: Path
    functions: Path  # one folder per function, holding its handler file

    def task_root(self, function: LambdaFunction) -> Path:
        return self.functions / function.name


def deploy_code(scratch: Path, python: str) -> tuple[DeployedCode, DeployedCode]:
    """Builds the layer with its own Makefile (wheels for this machine) and copies the handlers as
    SAM does; returns the code as shipped and the same code without bytecode."""
    shipped = DeployedCode(scratch / "shipped" / "layer" / "python", scratch / "shipped" / "functions")
    built = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(LAYER),
            "build-SharedLayer",
            f"ARTIFACTS_DIR={shipped.layer.parent}",
            f"PYTHON={python}",
            "LAYER_PLATFORMS=",  # this machine's wheels: the arm64 ones would not load here
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if built.returncode != 0:
        raise RuntimeError(f"building the layer failed:\n{built.stdout[-2000:]}\n{built.stderr[-3000:]}")
    for function in template_functions():
        shutil.copytree(function.source, shipped.task_root(function), ignore=shutil.ignore_patterns("__pycache__"))
    bare = DeployedCode(scratch / "bare" / "layer" / "python", scratch / "bare" / "functions")
    shutil.copytree(shipped.layer, bare.layer, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(shipped.functions, bare.functions)
    return shipped, bare


def lambda_interpreter() -> str:
    """The interpreter without the benchmark's virtualenv: only the deployed code is importable."""
    return getattr(sys, "_base_executable", None) or sys.executable


def runtime_environment(function: LambdaFunction | None, layer: Path, task_root: Path | None = None) -> dict[str, str]:
    """A clean environment (nothing from the benchmark's own AWS settings), as Lambda builds one."""
    env = {name: os.environ[name] for name in ("PATH", "LANG", "LC_ALL", "TZ") if name in os.environ}
    env |= {
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        # Lambda injects the role's credentials as variables; without them botocore would walk the
        # credential chain (files, then the instance metadata service) when a client is created.
        "AWS_ACCESS_KEY_ID": "ASIABENCHBENCHBENCH0",
        "AWS_SECRET_ACCESS_KEY": "bench-secret-access-key",
        "AWS_SESSION_TOKEN": "bench-session-token",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
        # /var/task and /opt are read-only: a module without shipped bytecode is compiled every time.
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": str(layer),
    }
    if function is not None:
        root = task_root or function.source
        # /var/task first, then the layer's /opt/python, as the runtime orders sys.path.
        env["PYTHONPATH"] = os.pathsep.join([str(root), str(layer)])
        env["LAMBDA_TASK_ROOT"] = str(root)
        env |= function.environment
    return env


# ---- measurements -----------------------------------------------------------------------------------
def _import_code(module: str) -> str:
    return f"import sys; sys.stderr.write({_MARKER!r} + '\\n'); sys.stderr.flush(); import {module}"


def _run_python(
    args: list[str], function: LambdaFunction | None, code: DeployedCode
) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter in the function's task root with its Lambda environment (or boto3, alone)."""
    task_root = code.task_root(function) if function else None
    return subprocess.run(
        [lambda_interpreter(), "-s", *args],
        cwd=task_root or code.layer,
        env=runtime_environment(function, code.layer, task_root),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def measure_once(module: str, function: LambdaFunction | None, code: DeployedCode) -> list[ImportNode]:
    done = _run_python(["-X", "importtime", "-c", _import_code(module)], function, code)
    if done.returncode != 0:
        where = function.name if function else "alone"
        raise RuntimeError(f"importing {module} ({where}) failed:\n{done.stderr[-3000:]}")
    return parse_importtime(done.stderr)


_PROFILE_CODE = """
import cProfile, pstats, sys
profiler = cProfile.Profile()
profiler.enable()
import {module}
profiler.disable()
profiler.dump_stats(sys.argv[1])
"""
# Work done while the handler module runs that is not an import: where its own "self" time goes.
_HOT_SPOTS = {
    "boto clients created (botocore create_client)": ("botocore/session.py", "create_client"),
    "import aws_xray_sdk.core (by Powertools Tracer())": ("aws_xray_sdk/core/__init__.py", "<module>"),
    "X-Ray patching of libraries (Tracer patch_modules)": ("aws_xray_sdk/core/patcher.py", "patch"),
    "X-Ray recorder's own boto 'xray' clients": ("aws_xray_sdk/core/sampling/connector.py", "_create_xray_client"),
    "service-model JSON parsing (json raw_decode)": ("json/decoder.py", "raw_decode"),
    "regular expressions compiled (re._compile)": ("re/__init__.py", "_compile"),
}


def profile_hot_spots(function: LambdaFunction, code: DeployedCode, scratch: Path) -> dict[str, Any]:
    """One cProfile run of the import: cumulative time (and calls) of the known costly operations,
    as a share of the whole import (cProfile slows everything, so shares, not milliseconds, matter)."""
    output = scratch / f"import-{function.name}.prof"
    done = _run_python(["-c", _PROFILE_CODE.format(module=function.module), str(output)], function, code)
    if done.returncode != 0:
        raise RuntimeError(f"profiling the import of {function.name} failed:\n{done.stderr[-3000:]}")
    stats = pstats.Stats(str(output))
    table: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    total = max(entry[3] for entry in table.values())
    spots: dict[str, Any] = {"profiled_seconds": total}
    for label, (file_suffix, function_name) in _HOT_SPOTS.items():
        matches = [v for (file, _, name), v in table.items() if file.endswith(file_suffix) and name == function_name]
        calls = sum(v[1] for v in matches)
        # raw_decode and _compile are leaves or near-leaves: tottime; the others: cumulative.
        seconds = sum(v[2] if function_name in ("raw_decode", "_compile") else v[3] for v in matches)
        spots[label] = {"calls": calls, "share": seconds / total if total else 0.0}
    return spots


def run(repeats: int, scratch: Path) -> Section:
    section = Section("import time")
    functions = template_functions()
    shipped, bare = deploy_code(scratch, sys.executable)
    targets: list[tuple[str, str, LambdaFunction | None]] = [("boto3", "boto3", None)]
    targets += [(f.name, f.module, f) for f in functions]
    for _, module, function in targets:  # warms the file cache, as a deployed layer's disk is warm
        measure_once(module, function, shipped)
    runs: dict[str, list[list[ImportNode]]] = {label: [] for label, _, _ in targets}
    for _ in range(repeats):  # interleaved, so a noisy moment hurts every target alike
        for label, module, function in targets:
            runs[label].append(measure_once(module, function, shipped))
    # Compiling from source takes ~1 s per import and varies little: a few runs suffice.
    bare_runs = {f.name: [total_ms(measure_once(f.module, f, bare)) for _ in range(min(repeats, 3))] for f in functions}

    def median_run(label: str) -> tuple[float, list[ImportNode]]:
        ordered = sorted(runs[label], key=total_ms)
        middle = ordered[(len(ordered) - 1) // 2]
        return statistics.median(total_ms(r) for r in runs[label]), middle

    boto3_ms, boto3_tree = median_run("boto3")
    section.figures.append(Figure("import_boto3_ms", "import boto3 alone (median)", boto3_ms, "ms"))
    section.details = {"repeats": repeats, "boto3_ms": [total_ms(r) for r in runs["boto3"]], "functions": {}}
    for function in functions:
        handler_ms, tree = median_run(function.name)
        # Each handler run against the boto3 run of the same round: slow drift cancels out.
        ratios = [total_ms(h) / total_ms(b) for h, b in zip(runs[function.name], runs["boto3"], strict=True)]
        ratio = statistics.median(ratios)
        bare_ms = statistics.median(bare_runs[function.name])
        section.figures += [
            Figure(f"import_{function.name}_ms", f"import {function.name} handler (median)", handler_ms, "ms"),
            Figure(f"import_{function.name}_ratio", f"import {function.name} / boto3", ratio, "x", target=TARGET_RATIO),
            Figure(
                f"import_{function.name}_no_bytecode_ms",
                f"import {function.name}, layer without bytecode",
                bare_ms,
                "ms",
                note="SAM's python builder",
            ),
        ]
        detail: dict[str, Any] = {
            "ms": [total_ms(r) for r in runs[function.name]],
            "ratios": ratios,
            "no_bytecode_ms": bare_runs[function.name],
            "dominant_imports": dominant_imports(tree),
            "excess_over_boto3_ms": excess_by_package(tree, boto3_tree),
        }
        if ratio > TARGET_RATIO:
            detail["hot_spots"] = profile_hot_spots(function, shipped, scratch)
            section.findings.append(_explain(function, ratio, handler_ms, tree, detail))
        section.details["functions"][function.name] = detail
    return section


def _explain(
    function: LambdaFunction, ratio: float, handler_ms: float, tree: list[ImportNode], detail: dict[str, Any]
) -> str:
    excess = [
        f"{'module body of ' + package if package == function.module else package} +{ms:.0f}"
        for package, ms in detail["excess_over_boto3_ms"].items()
        if ms >= 5
    ]
    lines = [
        f"{function.name}: {handler_ms:.0f} ms = {ratio:.1f}x boto3.",
        f"  beyond boto3 alone, own time by package (ms): {', '.join(excess)}",
        "  import tree (entries >= 5% of the total):",
    ]
    lines += [f"    {line}" for line in dominant_imports(tree)]
    lines.append("  module-level work (cProfile, share of the whole profiled import):")
    spots = [(label, spot) for label, spot in detail["hot_spots"].items() if isinstance(spot, dict)]
    for label, spot in sorted(spots, key=lambda item: -item[1]["share"]):
        if spot["share"] >= 0.03:
            lines.append(f"    {spot['share']:4.0%}  {label} [{spot['calls']} calls]")
    return "\n".join(lines)
