"""Is the representation alive? Spread, effective rank and drift of published features."""
from collections import deque

import numpy as np
import torch


def effective_rank(features: np.ndarray) -> float:
    """exp(entropy) of the normalised singular values of the centred features [N, D]
    (Roy and Vetterli 2007): D for features that fill every dimension equally, 1 for a line,
    0 for constant features."""
    centred = features - features.mean(axis=0)
    # torch, not numpy: numpy's OpenBLAS starts threads of its own, and on a busy 2-core
    # machine this 200x64 SVD then took 107 ms (p50; up to 0.5 s) instead of 0.8 ms, once a
    # second inside perception_node, which dropped the frames arriving meanwhile
    # (docs/realtime_benchmark.md). torch keeps to the node's one thread.
    singular = torch.linalg.svdvals(torch.from_numpy(np.ascontiguousarray(centred))).numpy()
    total = singular.sum()
    if total <= 1e-12:
        return 0.0
    p = singular / total
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


class RepresentationHealth:
    """A window of recently published features and the drift of one fixed input's features."""

    def __init__(self, window: int = 200):
        self._features: deque[np.ndarray] = deque(maxlen=window)
        self._reference: np.ndarray | None = None
        self._reference_time = 0.0

    def add(self, features: np.ndarray) -> None:
        self._features.append(features)

    def summary(self, reference: np.ndarray | None, now: float) -> dict[str, float]:
        """Per-dimension std (mean and min), effective rank and drift per second.

        :param reference: the current features of a fixed input (None when there is none yet).
        :param now: seconds on a steady clock.
        """
        values = {'feature_std_mean': float('nan'), 'feature_std_min': float('nan'),
                  'effective_rank': float('nan'), 'drift_per_s': float('nan')}
        if len(self._features) >= 2:
            window = np.stack(self._features)
            std = window.std(axis=0)
            values.update(feature_std_mean=float(std.mean()), feature_std_min=float(std.min()),
                          effective_rank=effective_rank(window))
        if reference is not None:
            if self._reference is not None and now > self._reference_time:
                rms = float(np.sqrt(np.mean((reference - self._reference) ** 2)))
                values['drift_per_s'] = rms / (now - self._reference_time)
            self._reference, self._reference_time = reference, now
        return values
