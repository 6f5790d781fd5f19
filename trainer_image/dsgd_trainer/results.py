"""The run's result files in training.outputDir, written by rank 0.

- `metrics.jsonl`: one JSON object per evaluation (per epoch), appended as the
  run goes. A resumed run first drops the records of epochs after its
  checkpoint, so the file never holds an epoch twice.
- `summary.json`: written once at the end (atomically): the fields of the pod
  contract and a few more (see `dsgd_trainer.train.summarize`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


def append_record(output_dir: Path, record: dict[str, Any]) -> None:
    """Append one evaluation record as a line of metrics.jsonl."""
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / METRICS_FILE, "a") as file:
        file.write(json.dumps(record) + "\n")


def drop_records_after(output_dir: Path, epoch: int) -> None:
    """Keep only metrics.jsonl records with `epoch` <= `epoch` (a resume from that epoch)."""
    path = output_dir / METRICS_FILE
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the crash we are recovering from
        if isinstance(record, dict) and record.get("epoch", 0) <= epoch:
            kept.append(line)
    write_atomically(path, "".join(line + "\n" for line in kept))


def read_records(output_dir: Path) -> list[dict[str, Any]]:
    path = output_dir / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_summary(output_dir: Path, summary: dict[str, Any]) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(output_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
