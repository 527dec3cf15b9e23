"""Benchmark results: one table per benchmark on the console, one JSON file per benchmark on disk."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table


@dataclass(frozen=True)
class Column:
    """A row key shown in the console table under ``header``, formatted with ``fmt``."""

    key: str
    header: str
    fmt: str = "{:.3g}"


@dataclass(frozen=True)
class Target:
    """A ratio the issue asks for: met when ``value <= threshold`` (``at_most``) or ``>=`` otherwise."""

    name: str
    value: float
    threshold: float
    at_most: bool

    @property
    def met(self) -> bool:
        return self.value <= self.threshold if self.at_most else self.value >= self.threshold

    def as_dict(self) -> dict:
        return {"name": self.name, "value": self.value, "threshold": self.threshold,
                "comparison": "<=" if self.at_most else ">=", "met": self.met}


@dataclass
class SubTable:
    """A further table of a benchmark: printed below its first, written to its JSON as ``tables[key]``."""

    key: str
    title: str
    columns: list[Column]
    rows: list[dict]


@dataclass
class BenchResult:
    """What one benchmark measured.

    ``rows``: one dict per configuration (numbers and a few labels); ``summary``: headline
    numbers (ratios); ``targets``: the issue's targets judged on ``summary``; ``settings``: the
    sizes used; ``notes``: what a reader needs to interpret the numbers; ``tables``: further
    tables with rows of other keys (e.g. the FNO baseline beside UPT in ``rollout``).
    """

    name: str
    title: str
    columns: list[Column]
    rows: list[dict]
    summary: dict[str, float] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    tables: list[SubTable] = field(default_factory=list)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict:
    """Where the numbers were measured: hardware, thread count and library versions."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    return {
        "device": str(device),
        "device_name": name,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_rows(rows: list[dict]) -> list[dict]:
    return [{k: _finite_or_none(v) for k, v in row.items()} for row in rows]


def to_json(result: BenchResult, env: dict, quick: bool) -> dict:
    return {
        "benchmark": result.name,
        "title": result.title,
        "command": " ".join(["python -m upt_lightning.bench", *sys.argv[1:]]),
        "quick": quick,
        "environment": env,
        "settings": result.settings,
        "rows": _json_rows(result.rows),
        "summary": {k: _finite_or_none(v) for k, v in result.summary.items()},
        "targets": [target.as_dict() for target in result.targets],
        "notes": result.notes,
        "tables": {table.key: {"title": table.title, "rows": _json_rows(table.rows)} for table in result.tables},
    }


def write_json(result: BenchResult, out_dir: Path, env: dict, quick: bool) -> Path:
    """Write ``<out_dir>/<name>.json`` and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{result.name}.json"
    path.write_text(json.dumps(to_json(result, env, quick), indent=2) + "\n")
    return path


def _cell(row: dict, column: Column) -> str:
    value = row.get(column.key)
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return column.fmt.format(value)


def _table(title: str, columns: list[Column], rows: list[dict]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column.header, justify="right")
    for row in rows:
        table.add_row(*(_cell(row, column) for column in columns))
    return table


def print_result(result: BenchResult, console: Console) -> None:
    console.print(_table(result.title, result.columns, result.rows))
    for extra in result.tables:
        console.print(_table(extra.title, extra.columns, extra.rows))
    for name, value in result.summary.items():
        console.print(f"  {name}: {value:.3g}")
    for target in result.targets:
        verdict = "[green]met[/green]" if target.met else "[red]missed[/red]"
        sign = "<=" if target.at_most else ">="
        console.print(f"  target {target.name}: {target.value:.3g} ({sign} {target.threshold:g}) {verdict}")
    for note in result.notes:
        console.print(f"  [dim]{escape(note)}[/dim]")  # a note's brackets (".[baselines]") are text, not markup
