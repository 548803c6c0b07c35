"""Running benchmark jobs in worker processes and tabulating them over seeds."""
import csv
import itertools
import multiprocessing
import time
from pathlib import Path
from typing import Callable

import numpy as np


def run_jobs(function: Callable[..., dict], jobs: list[tuple], out: Path, workers: int,
             describe: Callable[[dict], str], summarise: Callable[[list[dict]], str]
             ) -> list[dict]:
    """function(*job) for every job, `workers` processes at a time (one torch thread each).

    Each result row is appended to out/results.csv as it arrives, so an interrupted run keeps
    what it measured, and `describe(row)` is printed with the progress. At the end the
    `summarise(rows)` table is printed and written to out/table.md.
    """
    out.mkdir(parents=True, exist_ok=True)
    rows, started = [], time.monotonic()
    with multiprocessing.get_context('spawn').Pool(workers) as pool, \
            open(out / 'results.csv', 'w', newline='') as file:
        writer = None
        for row in pool.imap_unordered(_Call(function), jobs):
            rows.append(row)
            if writer is None:
                writer = csv.DictWriter(file, fieldnames=list(row))
                writer.writeheader()
            writer.writerow(row)
            file.flush()
            print(f'[{len(rows)}/{len(jobs)} {time.monotonic() - started:5.0f} s] '
                  f'{describe(row)}', flush=True)
    table = summarise(rows)
    (out / 'table.md').write_text(table + '\n')
    print(table)
    return rows


class _Call:
    """A picklable function(*job), for Pool.imap_unordered."""

    def __init__(self, function: Callable[..., dict]):
        self.function = function

    def __call__(self, job: tuple) -> dict:
        return self.function(*job)


def groups(rows: list[dict], key: Callable[[dict], tuple]) -> list[list[dict]]:
    """The rows that share key(row) (the seeds of one arm and scene, say), in key order."""
    return [list(group) for _, group in itertools.groupby(sorted(rows, key=key), key=key)]


def mean_std(rows: list[dict], name: str, digits: int = 3) -> str:
    """'mean ± std' of one column over rows (seeds)."""
    values = [row[name] for row in rows]
    return f'{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}'
