"""Learning that cannot blow up: skip non-finite steps, and go back to the last good weights."""
import copy

import torch
from torch import nn


def all_finite(modules: list[nn.Module]) -> bool:
    """Whether every floating-point parameter and buffer of the modules is finite."""
    return all(bool(torch.isfinite(t).all()) for m in modules for t in m.state_dict().values()
               if t.is_floating_point())


class LastGood:
    """A copy of some modules' weights and their optimizer's state from when they were sound.

    A learner reports each step as `succeeded()` or `failed()` (non-finite loss or gradient:
    the step was skipped). `patience` failures in a row mean the weights themselves have gone
    bad: the learner then calls `restore()`.
    """

    def __init__(self, modules: list[nn.Module], optimizer: torch.optim.Optimizer,
                 patience: int = 10):
        self._modules, self._optimizer, self.patience = modules, optimizer, patience
        self.in_a_row = 0
        self.skipped = 0
        """Steps skipped for a non-finite loss or gradient."""
        self.restores = 0
        """Times the last good weights were restored."""
        self._copy: tuple[list[dict], dict] | None = None
        self.snapshot()

    def snapshot(self) -> bool:
        """Keep the current weights and optimizer state as the last good ones, if finite."""
        if not all_finite(self._modules):
            return False
        self._copy = ([copy.deepcopy(m.state_dict()) for m in self._modules],
                      copy.deepcopy(self._optimizer.state_dict()))
        return True

    def succeeded(self) -> None:
        self.in_a_row = 0

    def failed(self) -> bool:
        """Count a skipped step; True when it is the `patience`-th in a row: time to restore."""
        self.skipped += 1
        self.in_a_row += 1
        return self.in_a_row >= self.patience

    def restore(self, counted: bool = True) -> None:
        """Put the last good weights and optimizer state back (`counted` in `restores` unless
        it undoes work stopped on purpose rather than gone bad)."""
        weights, optimizer = self._copy
        for module, state in zip(self._modules, weights):
            module.load_state_dict(state)
        self._optimizer.load_state_dict(copy.deepcopy(optimizer))
        self.in_a_row = 0
        self.restores += counted
