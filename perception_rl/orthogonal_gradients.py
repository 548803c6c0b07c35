"""Each training step's gradient made orthogonal to the recent gradients, before Adam sees it.

Consecutive frames of a camera stream are nearly the same picture, so consecutive training
steps bring nearly the same gradient, and Adam adds them up into long strides in one
direction: the encoder fits the scene in view and unlearns the others. Han et al. (2025,
"Learning from Streaming Video with Orthogonal Gradients", CVPR) remove from each gradient its
component along an exponential average of the past gradients, so a step carries what the
frame adds to the recent ones; they find it closes much of the gap between learning from a
shuffled and from a sequential video. Here the projection is per parameter tensor, and it
can remove only a share (`strength`) of that component: removed whole, a view that changes
slowly brings gradients along the history and the encoder learns it more slowly
(docs/representation_benchmark.md, "A slowly changing view").
"""
from collections.abc import Iterable

import torch
from torch import nn


class OrthogonalGradients(nn.Module):
    """The gradient history of some parameters, and the projection that uses it.

    The history tensors are buffers, so checkpoints and the last-good copy keep them with the
    weights.
    """

    def __init__(self, params: Iterable[torch.Tensor], decay: float, strength: float = 1.0):
        super().__init__()
        self.decay = decay
        self.strength = strength
        self._params = list(params)
        for index, param in enumerate(self._params):
            self.register_buffer(f'history_{index}', torch.zeros_like(param))

    @torch.no_grad()
    def project_(self) -> None:
        """Take from each parameter's gradient `strength` of its component along the gradient
        history (nothing while the history is empty), and add the gradient to the history."""
        for param, history in zip(self._params, self.buffers()):
            grad = param.grad
            if grad is None:
                continue
            along = (grad * history).sum() / history.pow(2).sum().clamp_min(1e-30)
            projection = (self.strength * along) * history
            history.mul_(self.decay).add_(grad, alpha=1.0 - self.decay)
            grad.sub_(projection)
