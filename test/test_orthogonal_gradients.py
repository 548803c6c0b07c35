"""Orthogonal gradients: a step carries what its gradient adds to the recent ones."""
import numpy as np
import pytest
import torch

from perception_rl.checkpoint import resume
from perception_rl.foveation import Roi
from perception_rl.online_perception import ACTION_DIM, OnlinePerception, PerceptionConfig
from perception_rl.orthogonal_gradients import OrthogonalGradients
from perception_rl.synthetic_scene import SyntheticScene


def _with_grad(param: torch.Tensor, grad: list[float]) -> None:
    param.grad = torch.tensor(grad)


def test_a_repeated_gradient_loses_the_part_it_shares_with_the_history():
    param = torch.zeros(2, requires_grad=True)
    orthogonal = OrthogonalGradients([param], decay=0.9)
    _with_grad(param, [1.0, 0.0])
    orthogonal.project_()
    assert torch.equal(param.grad, torch.tensor([1.0, 0.0]))  # no history yet: all of it
    _with_grad(param, [1.0, 1.0])
    orthogonal.project_()
    assert torch.allclose(param.grad, torch.tensor([0.0, 1.0]), atol=1e-6)  # only what is new
    _with_grad(param, [0.0, 0.0])
    orthogonal.project_()
    assert torch.equal(param.grad, torch.zeros(2))
    # the history holds the gradients as they came, not as projected
    history = 0.9 * 0.9 * 0.1 * torch.tensor([1.0, 0.0]) + 0.9 * 0.1 * torch.tensor([1.0, 1.0])
    assert torch.allclose(orthogonal.history_0, history)


def test_a_gradient_orthogonal_to_the_history_passes_unchanged():
    param = torch.zeros(3, requires_grad=True)
    orthogonal = OrthogonalGradients([param], decay=0.5)
    for grad in ([1.0, 0.0, 0.0], [0.0, 2.0, -3.0]):
        _with_grad(param, grad)
        orthogonal.project_()
        assert torch.allclose(param.grad, torch.tensor(grad))


def test_the_gradient_history_is_checkpointed_and_named_elsewhere(tmp_path):
    config = PerceptionConfig(orthogonal_gradient_decay=0.9)
    core = OnlinePerception(config)
    scene = SyntheticScene(seed=0)
    for _ in range(4):
        core.step(scene.step(), Roi(0, 0, 64, 64), np.zeros(ACTION_DIM))
    assert core.train_steps == 3
    assert any(bool(h.abs().sum() > 0) for h in core.orthogonal.buffers())
    core.save(tmp_path)
    resumed = OnlinePerception(config)
    resume(resumed, tmp_path, 'perception')
    for saved, loaded in zip(core.orthogonal.buffers(), resumed.orthogonal.buffers()):
        assert torch.equal(saved, loaded)
    with pytest.raises(ValueError, match=r'orthogonal_gradients: True in the checkpoint, '
                                         r'None here$'):
        resume(OnlinePerception(PerceptionConfig()), tmp_path, 'perception')


@pytest.mark.parametrize('decay', [-0.1, 1.0])
def test_a_decay_outside_zero_to_one_is_refused(decay):
    with pytest.raises(ValueError, match='orthogonal_gradient_decay'):
        OnlinePerception(PerceptionConfig(orthogonal_gradient_decay=decay))
