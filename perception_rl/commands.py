"""Mapping the actor's raw actions onto bounded, finite velocity commands."""
from dataclasses import dataclass

import numpy as np

TWIST_AXES = ('linear.x', 'linear.y', 'linear.z', 'angular.x', 'angular.y', 'angular.z')


@dataclass(frozen=True)
class CommandSpec:
    """Which Twist components the agent controls and the limit of each."""

    axes: tuple[str, ...] = ('linear.x', 'angular.z')
    limits: tuple[float, ...] = (0.2, 0.5)

    def __post_init__(self):
        if not self.axes:
            raise ValueError('controlled_axes must name at least one Twist component')
        unknown = [a for a in self.axes if a not in TWIST_AXES]
        if unknown:
            raise ValueError(f'controlled_axes: unknown {unknown}; choose from {TWIST_AXES}')
        if len(set(self.axes)) != len(self.axes):
            raise ValueError(f'controlled_axes lists a component twice: {list(self.axes)}')
        if len(self.limits) != len(self.axes):
            raise ValueError(f'axis_limits needs one limit per controlled axis '
                             f'({len(self.axes)}), got {len(self.limits)}')
        if not all(np.isfinite(v) and v > 0 for v in self.limits):
            raise ValueError(f'axis_limits must be finite and > 0, got {list(self.limits)}')

    def command(self, action: np.ndarray) -> dict[str, float]:
        """Twist component -> value: the action clipped to [-1, 1], scaled by the limits.

        Non-finite action entries become 0, so the result is always finite and within limits.
        """
        raw = np.nan_to_num(np.asarray(action, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        scaled = np.clip(raw, -1.0, 1.0) * np.asarray(self.limits)
        values = dict.fromkeys(TWIST_AXES, 0.0)
        values.update(zip(self.axes, (float(v) for v in scaled)))
        return values
