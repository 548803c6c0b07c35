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

Removed whole, the projection also removes what every frame's gradient shares: on a stream
that looks alike all the time (a MiniGrid agent's view) that is what there is to learn, and
the encoder hardly learns it (docs/learning_benchmark.md, "Why orthogonal gradients slow
it"). With a baseline (`baseline_decay` > 0), a much slower average of the gradients, only
the part of the recent history beyond the baseline is removed: what the last frames share
and the long run does not.
"""
from collections.abc import Iterable

import torch
from torch import nn


class OrthogonalGradients(nn.Module):
    """The gradient history (and baseline) of some parameters, and the projection that uses it.

    The history and baseline tensors are buffers, so checkpoints and the last-good copy keep
    them with the weights.
    """

    def __init__(self, params: Iterable[torch.Tensor], decay: float, strength: float = 1.0,
                 baseline_decay: float = 0.0):
        super().__init__()
        self.decay = decay
        self.strength = strength
        self.baseline_decay = baseline_decay
        self._params = list(params)
        for index, param in enumerate(self._params):
            self.register_buffer(f'history_{index}', torch.zeros_like(param))
            if baseline_decay > 0.0:
                self.register_buffer(f'baseline_{index}', torch.zeros_like(param))

    @torch.no_grad()
    def project_(self) -> None:
        """Take from each parameter's gradient `strength` of its component along the gradient
        history less the baseline (nothing while that is zero), and add the gradient to both."""
        for index, param in enumerate(self._params):
            grad = param.grad
            if grad is None:
                continue
            history = getattr(self, f'history_{index}')
            direction = history
            if self.baseline_decay > 0.0:
                baseline = getattr(self, f'baseline_{index}')
                direction = history - baseline
                baseline.mul_(self.baseline_decay).add_(grad, alpha=1.0 - self.baseline_decay)
            along = (grad * direction).sum() / direction.pow(2).sum().clamp_min(1e-30)
            projection = (self.strength * along) * direction
            history.mul_(self.decay).add_(grad, alpha=1.0 - self.decay)
            grad.sub_(projection)

    def restore(self, tensors: dict[str, torch.Tensor], prefix: str) -> None:
        """Load the buffers a checkpoint's `tensors` hold under `prefix` and empty the
        others (a checkpoint without a baseline starts it empty). ValueError on a shape that
        does not fit."""
        for name, buffer in self.named_buffers():
            saved = tensors.get(prefix + name)
            if saved is None:
                buffer.zero_()
                continue
            if saved.shape != buffer.shape:
                raise ValueError(f'checkpoint does not fit orthogonal: shape differs for {name}')
            buffer.copy_(saved)
