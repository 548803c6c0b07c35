"""Orthogonal gradients: a step carries what its gradient adds to the recent ones."""
import numpy as np
import pytest
import torch

from perception_rl.checkpoint import config_hash, load_latest, resume
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


def test_a_partial_strength_removes_that_share_of_the_shared_part():
    param = torch.zeros(2, requires_grad=True)
    orthogonal = OrthogonalGradients([param], decay=0.9, strength=0.25)
    _with_grad(param, [1.0, 0.0])
    orthogonal.project_()
    _with_grad(param, [1.0, 1.0])
    orthogonal.project_()
    assert torch.allclose(param.grad, torch.tensor([0.75, 1.0]), atol=1e-6)


def test_a_gradient_orthogonal_to_the_history_passes_unchanged():
    param = torch.zeros(3, requires_grad=True)
    orthogonal = OrthogonalGradients([param], decay=0.5)
    for grad in ([1.0, 0.0, 0.0], [0.0, 2.0, -3.0]):
        _with_grad(param, grad)
        orthogonal.project_()
        assert torch.allclose(param.grad, torch.tensor(grad))


def _trained(config: PerceptionConfig, frames: int = 4) -> OnlinePerception:
    core = OnlinePerception(config)
    scene = SyntheticScene(seed=0)
    for _ in range(frames):
        core.step(scene.step(), Roi(0, 0, 64, 64), np.zeros(ACTION_DIM))
    return core


def test_the_gradient_history_is_checkpointed_and_optional_on_resume(tmp_path):
    with_history = PerceptionConfig(orthogonal_gradient_decay=0.9)
    without = PerceptionConfig(orthogonal_gradient_decay=0.0)
    core = _trained(with_history)
    assert core.train_steps == 3
    assert any(bool(h.abs().sum() > 0) for h in core.orthogonal.buffers())
    core.save(tmp_path / 'with')
    resumed = OnlinePerception(with_history)
    resume(resumed, tmp_path / 'with', 'perception')
    for saved, loaded in zip(core.orthogonal.buffers(), resumed.orthogonal.buffers()):
        assert torch.equal(saved, loaded)
    # Turned off, the same checkpoint gives the weights and leaves the history behind.
    plain = OnlinePerception(without)
    resume(plain, tmp_path / 'with', 'perception')
    assert plain.orthogonal is None and plain.train_steps == 3
    assert all(torch.equal(a, b) for a, b in zip(core.encoder.parameters(),
                                                 plain.encoder.parameters()))
    # Turned on, a checkpoint made without them starts the history empty.
    _trained(without).save(tmp_path / 'without')
    started = OnlinePerception(with_history)
    resume(started, tmp_path / 'without', 'perception')
    assert started.train_steps == 3
    assert all(not h.any() for h in started.orthogonal.buffers())


def test_a_checkpoint_that_marked_the_history_as_architecture_still_loads(tmp_path):
    _trained(PerceptionConfig(orthogonal_gradient_decay=0.9)).save(tmp_path)
    checkpoint, _ = load_latest(tmp_path, 'perception')
    meta = checkpoint.metadata
    meta['architecture']['orthogonal_gradients'] = True  # as they once did
    meta['architecture_hash'] = config_hash(meta['architecture'])
    core = OnlinePerception(PerceptionConfig(orthogonal_gradient_decay=0.9))
    core.load(checkpoint)
    assert core.train_steps == 3
    meta['architecture']['action_dim'] = 3  # a real difference is still refused
    with pytest.raises(ValueError, match=r'action_dim: 3 in the checkpoint'):
        core.load(checkpoint)


@pytest.mark.parametrize('setting, value', [('orthogonal_gradient_decay', -0.1),
                                            ('orthogonal_gradient_decay', 1.0),
                                            ('orthogonal_gradient_strength', 0.0),
                                            ('orthogonal_gradient_strength', 1.5),
                                            ('orthogonal_gradient_baseline_decay', 1.0)])
def test_a_setting_out_of_range_is_refused(setting, value):
    with pytest.raises(ValueError, match=setting):
        OnlinePerception(PerceptionConfig(**{setting: value}))


def test_with_a_baseline_what_every_gradient_shares_passes():
    """A stream whose gradients share one persistent direction: the plain projection removes
    it from the next gradient, the one with a baseline leaves it in."""
    torch.manual_seed(0)
    persistent = torch.nn.functional.normalize(torch.randn(1000), dim=0)
    plain_param = torch.zeros(1000, requires_grad=True)
    baseline_param = torch.zeros(1000, requires_grad=True)
    plain = OrthogonalGradients([plain_param], decay=0.9)
    with_baseline = OrthogonalGradients([baseline_param], decay=0.9, baseline_decay=0.99)
    for _ in range(500):
        grad = persistent + torch.randn(1000) / 1000 ** 0.5
        for param, orthogonal in ((plain_param, plain), (baseline_param, with_baseline)):
            param.grad = grad.clone()
            orthogonal.project_()
    for param, orthogonal in ((plain_param, plain), (baseline_param, with_baseline)):
        param.grad = persistent.clone()
        orthogonal.project_()
    assert float(plain_param.grad @ persistent) < 0.1
    assert float(baseline_param.grad @ persistent) > 0.9


def test_a_checkpoint_without_the_baseline_loads_into_a_core_with_one(tmp_path):
    _trained(PerceptionConfig(orthogonal_gradient_decay=0.9)).save(tmp_path)
    checkpoint, _ = load_latest(tmp_path, 'perception')
    core = OnlinePerception(PerceptionConfig(orthogonal_gradient_decay=0.9,
                                             orthogonal_gradient_baseline_decay=0.999))
    core.load(checkpoint)
    assert core.orthogonal.history_0.any() and not core.orthogonal.baseline_0.any()
    saved = checkpoint.tensors['orthogonal.history_0']
    checkpoint.tensors['orthogonal.history_0'] = saved[:1]
    with pytest.raises(ValueError, match='shape differs for history_0'):
        core.load(checkpoint)
