"""Lock-step training on Gymnasium tasks: the command, its files, the tasks themselves."""
import csv
import subprocess

import numpy as np
import pytest

from conftest import BIN
from perception_rl.foveation import Roi, crop_fovea, downsample_periphery
from perception_rl.gym_tasks import ImageTask
from perception_rl.rollout import RolloutBuffer
from perception_rl.trainer import TrainConfig, read_episodes, train


def test_the_train_command_writes_episodes_curve_checkpoints_and_scalars(tmp_path):
    out = tmp_path / 'run'
    result = subprocess.run(
        [str(BIN / 'perception-rl'), 'train', '--env', 'MiniGrid-Empty-5x5-v0', '--steps', '400',
         '--seed', '1', '--out', str(out), '--rollout-length', '128'],
        capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    assert 'steps/s' in result.stdout and '400/400 steps' in result.stderr
    with open(out / 'episodes.csv') as file:
        rows = list(csv.reader(file))
    assert rows[0] == ['step', 'return', 'length']
    episodes = read_episodes(out / 'episodes.csv')
    assert len(episodes) >= 2  # Empty-5x5 times out after 100 steps at the latest
    assert np.all(np.diff(episodes[:, 0]) > 0) and np.all(episodes[:, 2] >= 1)
    assert np.all((episodes[:, 1] >= 0) & (episodes[:, 1] <= 1))
    assert (out / 'learning_curve.png').read_bytes()[:4] == b'\x89PNG'
    checkpoints = sorted(p.name for p in (out / 'checkpoints').iterdir())
    assert any(n.startswith('agent-') for n in checkpoints)
    assert any(n.startswith('perception-') for n in checkpoints)
    assert list((out / 'tensorboard').glob('events.out.tfevents.*'))


def test_an_unknown_environment_is_one_clear_error(tmp_path):
    result = subprocess.run(
        [str(BIN / 'perception-rl'), 'train', '--env', 'NoSuchEnv-v9', '--steps', '10',
         '--out', str(tmp_path / 'run')], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "unknown environment 'NoSuchEnv-v9'" in result.stderr
    assert 'Traceback' not in result.stderr


@pytest.mark.parametrize('envs', [1, 4])
def test_training_updates_both_learners_and_every_step_is_counted(tmp_path, envs):
    summary = train(TrainConfig('perception_rl/Foveation-v1', steps=300, seed=2, envs=envs,
                                rollout_length=64), tmp_path, progress=False)
    ticks = 300 // envs
    assert summary['steps'] == 300
    # Every tick after the first completes one transition per environment; in lock-step
    # training no rollout is dropped while an update runs.
    assert summary['agent_updates'] == (ticks - 1) * envs // 64
    # Perception trains on every tick but the first, and with one environment on none that
    # begins an episode (nothing to link it to; the last episode's successor may not come).
    lowest = ticks - 1 - summary['episodes']
    highest = lowest + 1 if envs == 1 else ticks - 1
    assert lowest <= summary['perception_train_steps'] <= highest
    episodes = read_episodes(tmp_path / 'episodes.csv')
    assert len(episodes) == summary['episodes'] >= 1
    # 10 answers of +-0.1 each: an even number of tenths between -1 and 1.
    tenths = np.round(episodes[:, 1] * 10)
    assert np.allclose(episodes[:, 1] * 10, tenths) and set(tenths % 2) == {0.0}
    assert set(episodes[:, 2]) == {10.0}


@pytest.mark.parametrize('env_id, discrete, dims', [
    ('MiniGrid-Empty-5x5-v0', True, 7), ('perception_rl/Foveation-v1', True, 2),
    ('ALE/Pong-v5', True, 6)])
def test_tasks_give_bgr_frames_and_take_agent_actions(env_id, discrete, dims):
    task = ImageTask(env_id, seed=0)
    try:
        frame = task.reset()
        assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
        assert (task.discrete, task.action_dim) == (discrete, dims)
        frame, reward, terminated, truncated = task.step(np.array([dims - 1.0]))
        assert np.isfinite(reward) and frame.shape[2] == 3
        assert task.action_vector(np.array([1.0])).tolist() == [0.0, 1.0] + [0.0] * (dims - 2)
    finally:
        task.close()


def test_in_the_foveation_task_only_the_fovea_tells_the_stripes_apart():
    task = ImageTask('perception_rl/Foveation-v1', seed=0)
    peripheries, foveae = {True: set(), False: set()}, {True: set(), False: set()}
    for _ in range(20):
        frame = task.reset()
        vertical = task.env.unwrapped.vertical
        red = (frame[..., 2] > 200) & (frame[..., 0] < 50)  # BGR
        ys, xs = np.nonzero(red)
        cx, cy = int(xs.mean()), int(ys.mean())
        patch = downsample_periphery(frame, 64, 48)[cy // 4 - 1:cy // 4 + 2,
                                                    cx // 4 - 1:cx // 4 + 2]
        peripheries[vertical].add(patch.tobytes())
        fovea = crop_fovea(frame, Roi(cx - 24, cy - 24, 48, 48), 48)
        centre = fovea[16:32, 16:32, 0]
        foveae[vertical].add(bool(np.abs(np.diff(centre, axis=1)).sum()
                                  > np.abs(np.diff(centre, axis=0)).sum()))
    task.close()
    assert peripheries[True] == peripheries[False]  # the same grey either way
    assert foveae == {True: {True}, False: {False}}  # vertical stripes vary along x


def test_the_off_centre_foveation_task_never_puts_the_patch_where_a_fixed_fovea_looks():
    from perception_rl.visual_tasks import PATCH
    task = ImageTask('perception_rl/FoveationOffCentre-v1', seed=0)
    corners = set()
    for _ in range(50):
        frame = task.reset()
        height, width = frame.shape[:2]
        side = round(TrainConfig.roi_fraction * min(height, width))
        centre = Roi.centred(width, height, side, side)
        x, y = task.env.unwrapped._patch
        corners.add((x < width // 2, y < height // 2))
        assert x + PATCH <= centre.x or x >= centre.x + side or \
            y + PATCH <= centre.y or y >= centre.y + side, (x, y, centre)
    task.close()
    assert len(corners) == 4  # every quadrant comes up


def test_a_detail_focus_is_rewarded_with_the_detail_of_the_view_it_chose(tmp_path, monkeypatch):
    """Lock-step wiring: the focus chosen at step t sets the fovea of frame t+1, and the
    transition of step t is rewarded with that frame's fovea detail."""
    from perception_rl.agent import Agent
    from perception_rl.online_perception import OnlinePerception
    ticks, stored = [], []
    step_batch, act_batch, add = (OnlinePerception.step_batch, Agent.act_batch,
                                  RolloutBuffer.add)

    def seeing(self, frames, rois, *args, **kwargs):
        seen = step_batch(self, frames, rois, *args, **kwargs)
        ticks.append({'rois': list(rois), 'detail': seen.fovea_detail.copy()})
        return seen

    def acting(self, *args, **kwargs):
        decisions = act_batch(self, *args, **kwargs)
        ticks[-1]['focus'] = [d.focus.copy() for d in decisions]
        return decisions

    def adding(self, *args):
        stored.append((id(self), args[4].copy(), args[9], args[10]))  # focus, done, reward
        return add(self, *args)

    monkeypatch.setattr(OnlinePerception, 'step_batch', seeing)
    monkeypatch.setattr(Agent, 'act_batch', acting)
    monkeypatch.setattr(RolloutBuffer, 'add', adding)
    train(TrainConfig('perception_rl/Foveation-v1', steps=60, seed=3, envs=2,
                      rollout_length=16, focus='detail'), tmp_path, progress=False)
    buffers = sorted({s[0] for s in stored}, key=[s[0] for s in stored].index)
    checked = 0
    for env, buffer in enumerate(buffers):
        rows = [s for s in stored if s[0] == buffer]
        for t, (_, focus, done, reward) in enumerate(rows):
            chosen, after = ticks[t], ticks[t + 1]
            np.testing.assert_array_equal(focus, chosen['focus'][env])
            if done:
                assert np.isnan(reward)  # a new episode's fovea starts at the centre
                continue
            width, height = 256, 192
            assert after['rois'][env] == Roi.around(*np.clip(focus, -1, 1), width, height,
                                                    48, 48)
            assert reward == pytest.approx(after['detail'][env])
            checked += 1
    assert checked >= 40
    with pytest.raises(ValueError, match='--focus must be one of'):
        train(TrainConfig('perception_rl/Foveation-v1', steps=10, focus='surprise'),
              tmp_path / 'bad', progress=False)
