"""The job table's index names have one source, `vary_region/store/schema.py`: template.yaml's table
has exactly those indexes, and no other module of the functions or the CLI spells one (a copy in the
CLI would query an index the table no longer has after a rename)."""

from __future__ import annotations

import ast
from pathlib import Path

from vary_region.store import schema
from vary_region_local.template import resource_properties

ROOT = Path(__file__).resolve().parents[3]
INDEXES = {schema.OPEN_JOBS_INDEX, schema.JOBS_BY_DAY_INDEX}
PACKAGES = (ROOT / "layers" / "vary_region" / "vary_region", ROOT / "cli" / "vary_region_cli")


def test_the_schema_names_every_index_of_the_job_table() -> None:
    indexes = resource_properties("JobsTable")["GlobalSecondaryIndexes"]
    assert {index["IndexName"] for index in indexes} == INDEXES


def test_no_module_but_the_schema_spells_an_index_name() -> None:
    copies = [
        f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}"
        for package in PACKAGES
        for path in sorted(package.rglob("*.py"))
        if path != Path(schema.__file__).resolve()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and node.value in INDEXES
    ]
    assert copies == [], f"index names copied outside store/schema.py: {copies}"
