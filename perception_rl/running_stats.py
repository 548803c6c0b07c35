"""Running mean and variance (parallel Welford update, as in Chan et al. 1979)."""
import numpy as np


class RunningMeanStd:
    """Mean and variance of everything seen so far, updated a batch at a time.

    With `horizon`, the count stops growing there, so the statistics keep following inputs
    whose distribution moves (features of a perception that keeps learning), weighting the
    last `horizon` samples or so.
    """

    def __init__(self, shape: tuple[int, ...] = (), horizon: float = float('inf')):
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = 1e-4
        self.horizon = horizon

    def update(self, batch: np.ndarray) -> None:
        """Fold a batch [N, *shape] into the statistics."""
        batch = np.asarray(batch, np.float64)
        batch_mean, batch_var, n = batch.mean(axis=0), batch.var(axis=0), batch.shape[0]
        delta = batch_mean - self.mean
        total = self.count + n
        self.mean = self.mean + delta * n / total
        m2 = self.var * self.count + batch_var * n + delta ** 2 * self.count * n / total
        self.var = m2 / total
        self.count = min(total, self.horizon)

    def normalise(self, values: np.ndarray, clip: float = 5.0) -> np.ndarray:
        """(values - mean) / std, clipped to [-clip, clip], as float32."""
        return np.clip((values - self.mean) / self.std, -clip, clip).astype(np.float32)

    def state(self) -> list:
        """[mean, var, count] as plain lists, for a checkpoint's metadata."""
        return [self.mean.tolist(), self.var.tolist(), self.count]

    def load_state(self, state: list) -> None:
        mean, var, count = state
        self.mean, self.var, self.count = np.array(mean), np.array(var), float(count)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.var + 1e-8)
