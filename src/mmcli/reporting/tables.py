"""Results on stdout: a rich table on a terminal, CSV (or JSON lines) in a pipe."""

from __future__ import annotations

import csv
import json
import sys
from typing import Any, Sequence

from rich.table import Table

from mmcli.reporting.console import out, stdout_is_terminal


def show_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "auto") -> None:
    """fmt: auto (table on a terminal, CSV otherwise), table, csv, jsonl."""
    if fmt == "auto":
        fmt = "table" if stdout_is_terminal() else "csv"
    if fmt == "table":
        table = Table(title=title)
        for c in columns:
            table.add_column(c)
        for r in rows:
            table.add_row(*["" if v is None else str(v) for v in r])
        out().print(table)
    elif fmt == "jsonl":
        for r in rows:
            sys.stdout.write(json.dumps(dict(zip(columns, r)), ensure_ascii=False) + "\n")
    else:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
    sys.stdout.flush()


def print_jsonl(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    sys.stdout.flush()
