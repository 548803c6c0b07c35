"""Checkpoints: atomic, pruned, never NaN, and a corrupt newest one falls back to the one before."""
import numpy as np
import pytest
import torch

from perception_rl.checkpoint import checkpoints, load_latest, resume, save_checkpoint
from perception_rl.foveation import Roi
from perception_rl.online_perception import ACTION_DIM, OnlinePerception, PerceptionConfig
from perception_rl.synthetic_scene import SyntheticScene


def test_keeps_the_newest_and_leaves_no_temporary_files(tmp_path):
    for step in range(5):
        save_checkpoint(tmp_path, 'x', step, {'w': torch.full((2,), float(step))}, {}, keep=3)
    assert [p.name for p in checkpoints(tmp_path, 'x')] == [
        'x-0000000004.safetensors', 'x-0000000003.safetensors', 'x-0000000002.safetensors']
    assert not list(tmp_path.glob('.*tmp'))


def test_refuses_non_finite_weights(tmp_path):
    with pytest.raises(ValueError, match='non-finite'):
        save_checkpoint(tmp_path, 'x', 0, {'w': torch.tensor([1.0, float('nan')])}, {})
    assert checkpoints(tmp_path, 'x') == []


def test_truncated_newest_falls_back_to_the_previous(tmp_path):
    save_checkpoint(tmp_path, 'x', 1, {'w': torch.ones(100)}, {'note': 'good'})
    newest = save_checkpoint(tmp_path, 'x', 2, {'w': torch.zeros(100)}, {'note': 'newest'})
    newest.write_bytes(newest.read_bytes()[:50])
    loaded, problems = load_latest(tmp_path, 'x')
    assert loaded.metadata == {'note': 'good'} and torch.equal(loaded.tensors['w'], torch.ones(100))
    assert len(problems) == 1 and newest.name in problems[0]


def test_perception_resumes_weights_optimizer_and_steps(tmp_path):
    core = OnlinePerception(PerceptionConfig(seed=0))
    scene = SyntheticScene(seed=0)
    for _ in range(6):
        core.step(scene.step(), Roi(0, 0, 64, 64), np.zeros(ACTION_DIM))
    core.save(tmp_path)
    resumed = OnlinePerception(PerceptionConfig(seed=1, learning_rate=1e-5))
    notes = resume(resumed, tmp_path, 'perception')
    assert resumed.train_steps == 5 and 'resumed' in notes[-1]
    assert resumed.optimizer.param_groups[0]['lr'] == 1e-5  # the configured rate wins
    for a, b in zip(core.encoder.parameters(), resumed.encoder.parameters()):
        assert torch.equal(a, b)
    state_a, state_b = core.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert torch.equal(state_a['state'][0]['exp_avg'], state_b['state'][0]['exp_avg'])


def test_nothing_is_unpickled(tmp_path):
    """safetensors holds raw tensors and JSON; a pickle payload is simply not a checkpoint."""
    (tmp_path / 'x-0000000009.safetensors').write_bytes(
        b'\x80\x04\x95' + b'cos\nsystem\n(S"echo pwned"\ntR.')
    loaded, problems = load_latest(tmp_path, 'x')
    assert loaded is None and len(problems) == 1
