"""Timing of the nodes: recent durations for /diagnostics, per-frame traces for the bench."""
from collections import deque

import numpy as np


class LatencyWindow:
    """The last N durations in milliseconds."""

    def __init__(self, size: int = 400):
        self._values: deque[float] = deque(maxlen=size)

    def add(self, ms: float) -> None:
        self._values.append(ms)

    def summary(self) -> dict[str, float]:
        """p50, p99 and max of the window (zeros when empty)."""
        if not self._values:
            return {'p50': 0.0, 'p99': 0.0, 'max': 0.0}
        values = np.fromiter(self._values, float)
        p50, p99 = np.percentile(values, [50, 99])
        return {'p50': float(p50), 'p99': float(p99), 'max': float(values.max())}


class FrameTrace:
    """One CSV row of timestamps per frame, for `perception-rl bench` to join across nodes.

    Times are ns on the system clock (time.time_ns(), the clock of the image header stamps
    unless use_sim_time is set). Rows are buffered; close() writes what is left.
    """

    def __init__(self, path: str, fields: tuple[str, ...]):
        self._file = open(path, 'w', buffering=1 << 16)
        self._fields = len(fields)
        self._file.write(','.join(fields) + '\n')

    def row(self, *values) -> None:
        assert len(values) == self._fields
        self._file.write(','.join(str(int(v)) if isinstance(v, bool) else str(v)
                                  for v in values) + '\n')

    def close(self) -> None:
        self._file.close()
