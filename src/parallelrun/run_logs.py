"""The logs layout under a run's folder, as Azure ML users know it.

    logs/job_progress_overview.txt            progress lines, appended while the job runs
    logs/job_result.txt                       the final summary
    logs/job_error.txt                        why the job failed and the first errors, with tracebacks
    logs/sys/driver.txt                       the driver's own log (workers lost, retries, timeouts)
    logs/sys/job_report/processed_mini-batches.csv   one row per mini-batch
    logs/user/entry_script_log/nodeN/processNNN.log.txt   EntryScript().logger, per process
    logs/user/stdout/nodeN/processNNN.stdout.txt, logs/user/stderr/...   the processes' output
    logs/user/error/nodeN/processNNN.txt      user tracebacks, per process
    logs/user/error/failed_items.jsonl        one line per failed item
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from pathlib import Path

from .journal import Journal


def driver_logger(logs: Path, level: str = "INFO") -> logging.Logger:
    path = logs / "sys" / "driver.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"parallelrun.driver.{logs.parent.name}")
    logger.setLevel(level)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    h = logging.FileHandler(path, encoding="utf-8")
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(h)
    return logger


def append_progress(logs: Path, line: str) -> None:
    with open(logs / "job_progress_overview.txt", "a", encoding="utf-8") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_reports(logs: Path, journal: Journal) -> None:
    """processed_mini-batches.csv and failed_items.jsonl, rebuilt from the journal (the truth)."""
    report = logs / "sys" / "job_report" / "processed_mini-batches.csv"
    report.parent.mkdir(parents=True, exist_ok=True)
    tmp = report.with_name(".processed.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["batch", "worker", "state", "attempts", "items", "succeeded", "failed", "seconds", "error",
                    "pieces", "isolated"])
        isolation = journal.isolation_report()  # batches split to isolate failures (docs/isolation.md)
        # One writerows over a generator of tuples: a row per mini-batch, 10,000 of them in W1.
        w.writerows(
            (idx, worker or "", state, attempts, n_items, ok, failed, "" if secs is None else f"{secs:.3f}",
             _last_line(error) if error else "", (iso[0] or "") if iso else "", "; ".join(iso[1]) if iso else "")
            for idx, state, attempts, n_items, ok, failed, worker, secs, error, _, _ in journal.batch_rows()
            for iso in (isolation.get(idx),))
    os.replace(tmp, report)
    failed = logs / "user" / "error" / "failed_items.jsonl"
    failed.parent.mkdir(parents=True, exist_ok=True)
    tmp = failed.with_name(".failed_items.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for item in journal.iter_failed_items():
            f.write(json.dumps({
                "input": item["item"], "mini_batch": item["batch"], "attempts": item["attempts"],
                "exception": item["exc_type"], "message": item["message"], "traceback": item["traceback"],
            }) + "\n")
    os.replace(tmp, failed)


def _last_line(text: str | None) -> str:
    """The exception line of a traceback (its last non-empty line)."""
    lines = [x for x in (text or "").splitlines() if x.strip()]
    return lines[-1].strip() if lines else ""


def write_result(logs: Path, text: str) -> None:
    _atomic_write(logs / "job_result.txt", text + "\n")


def write_error(logs: Path, text: str) -> None:
    _atomic_write(logs / "job_error.txt", text + "\n")
