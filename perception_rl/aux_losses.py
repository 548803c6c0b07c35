"""Self-supervised auxiliary losses that train perception online, one frame at a time.

Each loss sees the live features of the current frame (in the graph), the detached features
of the previous frame and the action taken in between. Only the current sample carries
gradient: no frames are stored for replay.
"""
from collections import deque
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

AUX_LOSSES = ('tpc', 'none')
"""Values of the perception node's `aux_loss` parameter; `none` freezes the encoder."""


@dataclass
class AuxLossConfig:
    """Weights and sizes of the auxiliary loss."""

    kind: str = 'tpc'
    """Which loss trains perception: one of AUX_LOSSES."""
    predictor_hidden: int = 128
    """Hidden width of the temporal predictor MLP."""
    variance_weight: float = 1.0
    """Weight of the anti-collapse variance term."""
    variance_target: float = 0.5
    """Per-dimension standard deviation over the window below which the hinge pushes."""
    variance_window: int = 32
    """How many past detached feature vectors the variance term compares against."""
    variance_stride: int = 8
    """One feature vector in this many enters the window, so it spans window*stride frames."""


class TemporalPredictiveCoding(nn.Module):
    """Predict features_t from (features_{t-1}, action_{t-1}); keep features from collapsing.

    The prediction error trains both the predictor and the encoder ("good features make the
    world predictable", seed issue option 1). A constant encoder would make that error zero,
    so a VICReg-style hinge keeps each dimension's standard deviation over a window of past
    features above `variance_target`. The window is sparse (every `variance_stride`-th frame):
    successive frames at 20 Hz are near duplicates, and a window of them has little spread to
    ask for. Only the current sample is live in it, so its term is scaled by the window length
    to keep its gradient from vanishing.
    """

    def __init__(self, feature_dim: int, action_dim: int, config: AuxLossConfig):
        super().__init__()
        self.config = config
        self.predictor = nn.Sequential(
            nn.Linear(feature_dim + action_dim, config.predictor_hidden), nn.ReLU(),
            nn.Linear(config.predictor_hidden, feature_dim))
        self._window: deque[torch.Tensor] = deque(maxlen=config.variance_window)
        self._steps = 0

    def forward(self, features: torch.Tensor, prev_features: torch.Tensor,
                prev_action: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and its terms for live features [1, D] against the previous step."""
        predicted = self.predictor(torch.cat([prev_features, prev_action], dim=1))
        prediction = F.mse_loss(predicted, features)
        total = prediction
        terms = {'prediction': float(prediction.detach())}
        if len(self._window) >= 2:
            window = torch.cat([*self._window, features], dim=0)
            std = torch.sqrt(window.var(dim=0) + 1e-4)
            variance = F.relu(self.config.variance_target - std).mean() * len(window)
            total = total + self.config.variance_weight * variance
            terms['variance'] = float(variance.detach())
        if self._steps % self.config.variance_stride == 0:
            self._window.append(features.detach())
        self._steps += 1
        terms['total'] = float(total.detach())
        return total, terms

    def reset(self) -> None:
        """Forget the window (after a jump in time: a looping bag, a camera restart)."""
        self._window.clear()
        self._steps = 0
