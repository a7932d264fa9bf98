"""Checks that a results folder's files are whole before post-processing reads them (report, compare, probe,
collect): a missing, empty or truncated file is one line naming it, never a traceback.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from solver import results

# JSON files every finished run writes, and what post-processing needs of them
RESULT_JSON = (results.SUMMARY, results.CASE_RESOLVED, results.MESH_META)


def read_json_object(path: Path) -> dict:
    """A JSON file holding an object; ValueError (one line, naming the file) when missing, empty or damaged."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read it ({getattr(err, 'strerror', None) or err})") from None
    if not text.strip():
        raise ValueError(f"{path}: empty file") from None
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON (truncated or damaged: {err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def check_table(path: Path) -> None:
    """A CSV time series with a header and at least one whole row (ValueError naming the file otherwise)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise ValueError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{path}: cannot read it ({getattr(err, 'strerror', None) or err})") from None
    if not rows or not rows[0]:
        raise ValueError(f"{path}: empty file")
    if len(rows) < 2:
        raise ValueError(f"{path}: a header and no rows")
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(rows[0]):
            raise ValueError(f"{path}: line {i} has {len(row)} values for {len(rows[0])} columns (truncated?)")
        for value in row:
            if not value:  # a column a row did not fill
                continue
            try:
                float(value)
            except ValueError:
                raise ValueError(f"{path}: line {i}: {value!r} is not a number (damaged?)") from None


def results_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a whole, finished results folder (None when it is)."""
    if not folder.is_dir():
        return f"{folder}: no such results folder"
    if not (folder / results.SUMMARY).exists():
        return f"{folder}: not a finished isolimb results folder (no summary.json)"
    try:
        for name in RESULT_JSON:
            read_json_object(folder / name)
        check_table(folder / results.SERIES)
    except ValueError as err:
        return str(err)
    return None
