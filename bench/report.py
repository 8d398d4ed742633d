"""The figures a benchmark run produces, the table it prints and the JSON it writes."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Direction = Literal["max", "min"]  # "max": the value must stay at or below the target


@dataclass(frozen=True)
class Figure:
    """One measured number; `target` None means it is reported for context, not judged.

    `key` is stable across runs and profiles (results.json is keyed by it); `label` is for people
    and may carry the run's sizes."""

    key: str
    label: str
    value: float
    unit: str
    target: float | None = None
    direction: Direction = "max"
    note: str = ""

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        if not math.isfinite(self.value):
            return False
        return self.value <= self.target if self.direction == "max" else self.value >= self.target

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"passed": self.passed}


@dataclass
class Section:
    """A benchmark's figures plus whatever explains them (kept in the JSON, printed on request)."""

    title: str
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)  # printed under the table: causes of misses


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (the "inclusive" method): defined for any non-empty sample."""
    if not values:
        return math.nan
    if len(values) == 1:
        return float(values[0])
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[round(pct) - 1] if pct < 100 else float(max(values))


def _format_value(value: float, unit: str) -> str:
    if not math.isfinite(value):
        return "n/a"
    if unit == "x":
        return f"{value:.2f}x"
    if float(value).is_integer() and abs(value) >= 1:
        return f"{value:.0f} {unit}"
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f"{value:.{digits}f} {unit}".rstrip()


def _format_target(figure: Figure) -> str:
    if figure.target is None:
        return "-"
    sign = "<=" if figure.direction == "max" else ">="
    return f"{sign} {_format_value(figure.target, figure.unit)}"


def render_table(sections: Sequence[Section]) -> str:
    rows = [("figure", "value", "target", "result")]
    for section in sections:
        for figure in section.figures:
            verdict = {True: "PASS", False: "FAIL", None: "info"}[figure.passed]
            rows.append((figure.label, _format_value(figure.value, figure.unit), _format_target(figure), verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_results(path: Path, sections: Sequence[Section], run: dict[str, Any]) -> None:
    figures = [figure.to_dict() | {"section": s.title} for s in sections for figure in s.figures]
    document = {
        "run": run,
        "figures": {figure["key"]: figure for figure in figures},
        "details": {s.title: s.details for s in sections},
        "findings": {s.title: s.findings for s in sections if s.findings},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    # NaN is not JSON: a figure that could not be measured is written as null.
    path.write_text(json.dumps(_finite(document), indent=2) + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
