"""The evaluation report: metrics with what produced them, as JSON and as a small table."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tapkit import __version__
from tapkit.utils.atomic import write_text_atomic


@dataclass
class EvalReport:
    """metrics: name -> value (AP and caption scores in percent, as papers print them;
    None where the data has nothing to measure, e.g. APs without small objects).
    model / data / settings: what was evaluated and how; timing: seconds and counts."""

    benchmark: str
    metrics: dict[str, float | None]
    model: dict
    data: dict
    settings: dict
    timing: dict
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        out = asdict(self)
        out["tapkit_version"] = __version__
        out["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        out["host"] = platform.node()
        return out

    def write(self, path: str | os.PathLike) -> None:
        write_text_atomic(path, json.dumps(self.to_json(), indent=1) + "\n")

    def table(self) -> str:
        return format_table(self.benchmark, self.metrics)


def format_value(value: float | None) -> str:
    """One decimal (three for small values); n/a where there is nothing to measure."""
    if value is None:
        return "n/a"
    return f"{value:.1f}" if abs(value) >= 1 or value == 0 else f"{value:.3f}"


def format_table(title: str, metrics: dict[str, float | None]) -> str:
    """A two-column text table of metrics."""
    rows = [(name, format_value(value)) for name, value in metrics.items()]
    width = max([len(title), *(len(n) for n, _ in rows)])
    vwidth = max([5, *(len(v) for _, v in rows)])
    lines = [f"{title:<{width}}  {'value':>{vwidth}}", f"{'-' * width}  {'-' * vwidth}"]
    lines += [f"{name:<{width}}  {value:>{vwidth}}" for name, value in rows]
    return "\n".join(lines)


def file_summary(path: str | os.PathLike | None) -> dict | None:
    """Path and size of an input file, to tell runs apart."""
    if path is None:
        return None
    p = Path(path)
    return {"path": str(p.resolve()), "bytes": p.stat().st_size if p.is_file() else None}
