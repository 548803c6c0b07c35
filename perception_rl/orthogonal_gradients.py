"""Each training step's gradient made orthogonal to the recent gradients, before Adam sees it.

Consecutive frames of a camera stream are nearly the same picture, so consecutive training
steps bring nearly the same gradient, and Adam adds them up into long strides in one
direction: the encoder fits the scene in view and unlearns the others. Han et al. (2025,
"Learning from Streaming Video with Orthogonal Gradients", CVPR) remove from each gradient its
component along an exponential average of the past gradients, so a step carries what the
frame adds to the recent ones; they find it closes much of the gap between learning from a
shuffled and from a sequential video. Here the projection is per parameter tensor.
"""
from collections.abc import Iterable

import torch
from torch import nn


class OrthogonalGradients(nn.Module):
    """The gradient history of some parameters, and the projection that uses it.

    The history tensors are buffers, so checkpoints and the last-good copy keep them with the
    weights.
    """

    def __init__(self, params: Iterable[torch.Tensor], decay: float):
        super().__init__()
        self.decay = decay
        self._params = list(params)
        for index, param in enumerate(self._params):
            self.register_buffer(f'history_{index}', torch.zeros_like(param))

    @torch.no_grad()
    def project_(self) -> None:
        """Replace each parameter's gradient by its part orthogonal to the gradient history
        (all of it while the history is empty), and add the gradient to the history."""
        for param, history in zip(self._params, self.buffers()):
            grad = param.grad
            if grad is None:
                continue
            along = (grad * history).sum() / history.pow(2).sum().clamp_min(1e-30)
            projection = along * history
            history.mul_(self.decay).add_(grad, alpha=1.0 - self.decay)
            grad.sub_(projection)
