"""The records of a run: one dict per image in ``results.json``, merged with an earlier run's,
the gallery index, and the one-line log of a finished image."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from inputiba.data.io import (
    ImageSource,
    save_json,
)
from inputiba.report.gallery import write_gallery

#: Keys of every record in ``results.json`` (failed records have ``None`` where nothing is known).
RECORD_KEYS = (
    "name", "file", "status", "error", "size", "target", "probability", "predicted", "method",
    "settings", "seconds", "losses", "outputs", "feature_max_bits", "gan_range", "gan_trained",
    "working_size", "warnings",
)


def _failed_record(src: ImageSource, error: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    rec: dict[str, Any] = dict.fromkeys(RECORD_KEYS)
    rec.update(name=src.name, file=src.label, status="failed", error=error, method="InputIBA",
               settings=dict(settings))
    return rec


def _merge_results(out_dir: Path, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Earlier records of the folder (other images) followed/updated by this run's."""
    path = out_dir / "results.json"
    old: list[dict[str, Any]] = []
    if path.is_file():
        with contextlib.suppress(Exception):
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, list):
                old = [r for r in data if isinstance(r, dict) and "name" in r]
    merged: dict[str, dict[str, Any]] = {r["name"]: r for r in old}
    for r in records:
        before = merged.get(r["name"])
        if r.get("status") != "ok" and before is not None and _still_ok(out_dir, before):
            continue  # a later failure never downgrades a finished result (its files stand)
        merged[r["name"]] = r
    return list(merged.values())


def _still_ok(out_dir: Path, record: Mapping[str, Any]) -> bool:
    """Whether ``record`` is an ``ok`` record whose output files are all still there."""
    outputs = record.get("outputs")
    if record.get("status") != "ok" or not isinstance(outputs, Mapping) or not outputs:
        return False
    return all(isinstance(f, str) and (out_dir / f).is_file() for f in outputs.values())


def _write_index(out_dir: Path, records: list[dict[str, Any]], subtitle: str) -> None:
    all_records = _merge_results(out_dir, records)
    save_json(out_dir / "results.json", all_records)
    write_gallery(out_dir, all_records, subtitle=subtitle)


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal (where progress bars redraw in place)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def done_line(k: int, n: int, rec: Mapping[str, Any]) -> str:
    """The progress line of a finished image: ``[k/n] name: class (p = 0.83), 12.3 s``."""
    target = rec.get("target") or {}
    seconds = sum(v for v in (rec.get("seconds") or {}).values() if isinstance(v, (int, float)))
    prob = rec.get("probability")
    p = f" (p = {prob:.2f})" if isinstance(prob, float) else ""
    return f"[{k}/{n}] {rec.get('name')}: {target.get('name')}{p}, {seconds:.1f} s"


def _final_losses(values: Any, j: int) -> Any:
    """The last value of sample ``j``'s loss curve(s): (B, steps) tensors, or dicts of them."""
    if isinstance(values, Mapping):
        return {k: _final_losses(v, j) for k, v in values.items()}
    try:
        return float(torch.as_tensor(values)[j].reshape(-1)[-1])
    except (IndexError, TypeError, ValueError, RuntimeError):
        return None
