"""CSV run logs of training jobs (pretrain, refresh): one row per logging interval or validation.

Rows are dicts keyed by column name; missing columns stay empty, floats are written with 6
significant digits. ``step`` is the first column of every log.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Sequence

__all__ = ["read_log", "write_log", "append_log", "log_series"]


def read_log(path: Path, up_to_step: int | None = None) -> list[dict[str, str]]:
    """Rows of ``path`` (none if it does not exist), optionally only those with ``step <= up_to_step``."""
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if up_to_step is not None:
        rows = [r for r in rows if int(r["step"]) <= up_to_step]
    return rows


def write_log(path: Path, columns: Sequence[str], rows: list[dict[str, Any]]) -> None:
    """Replace ``path`` with ``rows`` (atomically), e.g. to drop rows past a resumed checkpoint."""
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def append_log(path: Path, row: dict[str, Any], columns: Sequence[str]) -> None:
    """Append one row (the header first if the file is new)."""
    new = not path.is_file()
    with path.open("a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def log_series(rows: list[dict[str, str]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the rows that have a value for ``key``."""
    pts = [(int(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "", "nan")]
    return [p[0] for p in pts], [p[1] for p in pts]
