"""The files of a dataset run: the per-rank JSON-lines records, which items are complete, and the
settings (run.json) a resumed run must share with the first."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from inputiba.models.resolve import _one_line
from inputiba.workflows.explain import (
    ExplainError,
)

#: Settings in ``run.json`` that a resumed run must share with the first one (they change maps).
RUN_KEYS = ("model", "weights", "layer", "preset", "options", "seed", "targets", "layout",
            "precision", "input_size", "dataset", "statistics")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a JSON-lines file (a torn last line, from a crash, is ignored)."""
    out = []
    if not path.is_file():
        return out
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
    return out


def _append_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        return
    from inputiba.data.io import json_safe

    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(json_safe(r), ensure_ascii=False, allow_nan=False) + "\n"
                   for r in rows)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _complete(out: Path, rec: Mapping[str, Any]) -> bool:
    outputs = rec.get("outputs") or {}
    return rec.get("status") == "ok" and bool(outputs) and all(
        (out / f).is_file() for f in outputs.values())


def _records(out: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for p in sorted((out / "records").glob("rank*.jsonl")):
        rows.extend(_read_jsonl(p))
    return rows


def _check_run_settings(out: Path, settings: Mapping[str, Any]) -> None:
    path = out / "run.json"
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except Exception as exc:  # noqa: BLE001
        raise ExplainError(f"Cannot read {path}: {_one_line(exc)}") from None
    fresh = json.loads(json.dumps({k: settings[k] for k in RUN_KEYS}, default=str))
    diff = [k for k in RUN_KEYS if old.get(k) != fresh.get(k)]
    if diff:
        shown = "; ".join(f"{k}: {old.get(k)!r} -> {fresh.get(k)!r}" for k in diff[:3])
        raise ExplainError(
            f"Output folder {out} holds a run with other settings ({shown}); resume with the "
            "same settings or choose another output folder"
        )
