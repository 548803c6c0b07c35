"""Checkpoints: atomic, pruned, never NaN, and a corrupt newest one falls back to the one before."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from perception_rl.aux_losses import AuxLossConfig
from perception_rl.encoder import EncoderConfig
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
    assert len(problems) == 1 and problems[0][0] == newest


def _perception_checkpoints(tmp_path, steps=(6, 9)) -> list:
    """Checkpoints of one perception core after each count of frames in `steps`."""
    core = OnlinePerception(PerceptionConfig(seed=0))
    scene = SyntheticScene(seed=0)
    paths = []
    for frames in steps:
        while core.frames < frames:
            core.step(scene.step(), Roi(0, 0, 64, 64), np.zeros(ACTION_DIM))
        paths.append(core.save(tmp_path))
    return paths


@pytest.mark.parametrize('damage', ['truncate', 'flip_bytes', 'nan_weights'])
def test_a_damaged_newest_is_set_aside_and_the_previous_resumed(tmp_path, damage):
    older, newest = _perception_checkpoints(tmp_path)
    data = bytearray(newest.read_bytes())
    if damage == 'truncate':
        data = data[:len(data) // 2]
    elif damage == 'flip_bytes':  # the JSON header
        data[20:40] = b'\xff' * 20
    else:  # the data section: every float32 becomes NaN
        header = 8 + int.from_bytes(data[:8], 'little')
        data[header:] = b'\x00\x00\xc0\x7f' * ((len(data) - header) // 4)
    newest.write_bytes(bytes(data))
    resumed = OnlinePerception(PerceptionConfig(seed=1))
    note, unreadable = resume(resumed, tmp_path, 'perception')
    assert unreadable and f'resumed from {older}' in note and newest.name in note
    assert resumed.train_steps == 5
    assert checkpoints(tmp_path, 'perception') == [older]
    assert (tmp_path / (newest.name + '.corrupt')).read_bytes() == bytes(data)  # kept
    scene = SyntheticScene(seed=1)
    for _ in range(2):  # the first frame after a resume links to nothing: no training
        resumed.step(scene.step(), Roi(0, 0, 64, 64), np.zeros(ACTION_DIM))
    # what this run writes next is the newest, though the damaged file had a higher step
    written = resumed.save(tmp_path)
    assert checkpoints(tmp_path, 'perception')[0] == written


def test_only_damaged_checkpoints_give_one_message_and_a_fresh_start(tmp_path):
    for path in _perception_checkpoints(tmp_path):
        path.write_bytes(path.read_bytes()[:100])
    fresh = OnlinePerception(PerceptionConfig(seed=1))
    note, unreadable = resume(fresh, tmp_path, 'perception')
    assert unreadable and note.startswith('no usable perception checkpoint') \
        and note.endswith('starting fresh') and note.count('.safetensors:') == 2
    assert fresh.train_steps == 0 and checkpoints(tmp_path, 'perception') == []


def test_perception_resumes_weights_optimizer_and_steps(tmp_path):
    core = OnlinePerception(PerceptionConfig(seed=0))
    scene = SyntheticScene(seed=0)
    for _ in range(6):
        core.step(scene.step(), Roi(0, 0, 64, 64), np.zeros(ACTION_DIM))
    core.save(tmp_path)
    resumed = OnlinePerception(PerceptionConfig(seed=1, learning_rate=1e-5))
    note, unreadable = resume(resumed, tmp_path, 'perception')
    assert resumed.train_steps == 5 and note.startswith('resumed') and not unreadable
    assert resumed.optimizer.param_groups[0]['lr'] == 1e-5  # the configured rate wins
    for a, b in zip(core.encoder.parameters(), resumed.encoder.parameters()):
        assert torch.equal(a, b)
    state_a, state_b = core.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert torch.equal(state_a['state'][0]['exp_avg'], state_b['state'][0]['exp_avg'])


def test_perception_resumes_its_counters_and_random_generators(tmp_path):
    config = PerceptionConfig(seed=0, aux=AuxLossConfig(spec='pisco+vicreg'), train_every=2)
    core = OnlinePerception(config)
    scene = SyntheticScene(seed=0)
    for _ in range(7):
        core.step(scene.step(), Roi(0, 0, 64, 64), np.zeros(ACTION_DIM))
    core.save(tmp_path)
    resumed = OnlinePerception(replace(config, seed=3))
    resume(resumed, tmp_path, 'perception')
    assert (resumed.frames, resumed.train_steps, resumed.skipped_cadence) == (7, 3, 3)
    # the random draws continue where they stopped: the same next numbers
    assert resumed._view_rng.random() == core._view_rng.random()
    assert torch.equal(torch.rand(4, generator=resumed.aux.generators()['pisco']),
                       torch.rand(4, generator=core.aux.generators()['pisco']))


def test_a_non_finite_loss_skips_the_step_and_leaves_the_weights():
    core = OnlinePerception(PerceptionConfig(seed=0, aux=AuxLossConfig(spec='tpc')))
    scene = SyntheticScene(seed=0)
    core.step(scene.step(), Roi(0, 0, 64, 64), np.zeros(ACTION_DIM))
    before = [p.detach().clone() for p in core.encoder.parameters()]
    bad_action = np.full(ACTION_DIM, np.nan, np.float32)  # reaches the tpc predictor
    step = core.step(scene.step(), Roi(0, 0, 64, 64), bad_action)
    assert not step.trained and core.skipped_nonfinite == 1 and core.train_steps == 0
    assert all(torch.equal(a, b) for a, b in zip(before, core.encoder.parameters()))
    assert core.step(scene.step(), Roi(0, 0, 64, 64), np.zeros(ACTION_DIM)).trained


def test_weights_gone_bad_are_replaced_by_the_last_good_ones_after_k_failures():
    core = OnlinePerception(PerceptionConfig(seed=0, nonfinite_patience=4, good_every=3))
    scene = SyntheticScene(seed=0)
    for _ in range(4):  # 3 trained steps: a snapshot after the third
        core.step(scene.step(), Roi(0, 0, 64, 64), np.zeros(ACTION_DIM))
    good = [p.detach().clone() for p in core.encoder.parameters()]
    with torch.no_grad():
        next(core.encoder.parameters()).fill_(float('nan'))  # weights blown up
    for _ in range(4):
        assert not core.step(scene.step(), Roi(0, 0, 64, 64), np.zeros(ACTION_DIM)).trained
    assert core.last_good.restores == 1 and core.skipped_nonfinite == 4
    assert all(torch.equal(a, b) for a, b in zip(good, core.encoder.parameters()))
    step = core.step(scene.step(), Roi(0, 0, 64, 64), np.zeros(ACTION_DIM))
    assert step.trained and np.isfinite(step.features).all()


def test_nothing_is_unpickled(tmp_path):
    """safetensors holds raw tensors and JSON; a pickle payload is simply not a checkpoint."""
    (tmp_path / 'x-0000000009.safetensors').write_bytes(
        b'\x80\x04\x95' + b'cos\nsystem\n(S"echo pwned"\ntR.')
    loaded, problems = load_latest(tmp_path, 'x')
    assert loaded is None and len(problems) == 1


def test_another_architecture_is_refused_naming_the_field(tmp_path):
    _perception_checkpoints(tmp_path, steps=(3,))
    other = OnlinePerception(PerceptionConfig(encoder=replace(EncoderConfig(), fovea_size=32)))
    with pytest.raises(ValueError, match=r'encoder\.fovea_size: 48 in the checkpoint, 32 here$'):
        resume(other, tmp_path, 'perception')


def test_a_pooled_fovea_checkpoint_loads_only_into_a_pooled_fovea(tmp_path):
    """Spatial-fovea checkpoints keep the architecture of before `fovea_stream` existed, so
    they still load; a pooled one names the field anywhere else."""
    _perception_checkpoints(tmp_path, steps=(3,))
    assert 'fovea_stream' not in OnlinePerception(PerceptionConfig()).architecture()['encoder']
    pooled = replace(EncoderConfig(), fovea_stream='pooled')
    with pytest.raises(ValueError,
                       match=r"encoder\.fovea_stream: None in the checkpoint, 'pooled' here$"):
        resume(OnlinePerception(PerceptionConfig(encoder=pooled)), tmp_path, 'perception')
    OnlinePerception(PerceptionConfig(encoder=pooled)).save(tmp_path / 'pooled')
    again = OnlinePerception(PerceptionConfig(encoder=pooled))
    resume(again, tmp_path / 'pooled', 'perception')
    with pytest.raises(ValueError, match=r"encoder\.fovea_stream: 'pooled' in the checkpoint"):
        resume(OnlinePerception(PerceptionConfig()), tmp_path / 'pooled', 'perception')


def test_a_checkpoint_trained_with_frozen_convolutions_names_them_elsewhere(tmp_path):
    """The optimizer of a core with frozen convolutions holds the other layers only: a
    checkpoint of one loads into the same freezing, and anywhere else the error names it."""
    frozen = PerceptionConfig(frozen_conv_layers=3)
    OnlinePerception(frozen).save(tmp_path)
    resume(OnlinePerception(frozen), tmp_path, 'perception')
    with pytest.raises(ValueError, match=r'frozen_conv_layers: 3 in the checkpoint, None here$'):
        resume(OnlinePerception(PerceptionConfig()), tmp_path, 'perception')


def test_the_anchor_is_checkpointed_and_an_unanchored_checkpoint_names_the_field(tmp_path):
    _perception_checkpoints(tmp_path, steps=(3,))
    saved = OnlinePerception(PerceptionConfig(seed=0))
    saved.step(SyntheticScene(seed=0).step(), Roi(0, 0, 64, 64), np.zeros(ACTION_DIM))
    resumed = OnlinePerception(PerceptionConfig(seed=1))
    resume(resumed, tmp_path, 'perception')
    assert bool(resumed.encoder.anchor_set)
    assert torch.equal(resumed.encoder.anchor_fovea, saved.encoder.anchor_fovea)
    assert torch.equal(resumed.encoder.anchor_periphery, saved.encoder.anchor_periphery)
    unanchored = PerceptionConfig(encoder=replace(EncoderConfig(), anchored=False))
    OnlinePerception(unanchored).save(tmp_path / 'unanchored')
    assert 'anchored' not in OnlinePerception(unanchored).architecture()['encoder']
    with pytest.raises(ValueError, match=r'encoder\.anchored: None in the checkpoint, True here$'):
        resume(OnlinePerception(PerceptionConfig()), tmp_path / 'unanchored', 'perception')
