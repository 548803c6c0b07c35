"""The representation, drift and learning benchmarks: the probe's maths and short real runs."""
from pathlib import Path

import numpy as np
import pytest

from perception_rl import (drift_bench, learning_bench, node_probe, representation_bench,
                           still_view_bench)
from perception_rl.foveation import DEFAULT_ROI_SIZE, Roi
from perception_rl.online_perception import OnlinePerception
from perception_rl.representation_bench import (HEIGHT, PAN_PER_RAD, WIDTH, ScriptedActions,
                                                probe_r2)
from perception_rl.synthetic_scene import ALL_FAMILIES, SCENE_FAMILIES, SyntheticScene
from perception_rl.trainer import read_episodes


def test_the_probe_reads_linear_state_and_not_noise():
    rng = np.random.default_rng(0)
    state = rng.uniform(size=(2000, 3))
    mixing = rng.normal(size=(3, 64))
    informative = state @ mixing + 0.01 * rng.normal(size=(2000, 64))
    assert probe_r2(informative, state) > 0.99
    assert probe_r2(rng.normal(size=(2000, 64)), state) < 0.05


def test_a_cut_moves_the_camera_and_every_object():
    scene = SyntheticScene(spec=SCENE_FAMILIES['checker-wander'], seed=0)
    before = scene.state()
    scene.scatter()
    after = scene.state()
    assert after.shape == before.shape == (2 + 2 * 6,)
    assert np.all(after != before)
    assert np.all((0 <= after[2:]) & (after[2:] <= 1))


@pytest.mark.parametrize('family', list(ALL_FAMILIES))
def test_every_scene_family_renders_frames(family):
    scene = SyntheticScene(spec=ALL_FAMILIES[family], seed=1)
    frames = [scene.step(3.0) for _ in range(3)]
    assert all(f.shape == (480, 640, 3) and f.dtype == np.uint8 for f in frames)
    assert not np.array_equal(frames[0], frames[2])


def test_a_short_representation_run_reports_every_figure():
    row = representation_bench.run_arm('tpc+vicreg', 'blobs-bounce', 0, 200, heldout=300)
    assert row['train_steps'] == 199
    for key in ('stream_r2', 'frozen_r2', 'stream_r2_pan', 'frozen_r2_objects', 'stream_rank',
                'ms_per_frame'):
        assert np.isfinite(row[key]), key
    frozen = representation_bench.run_arm('frozen', 'blobs-bounce', 0, 200, heldout=1000)
    assert frozen['train_steps'] == 0
    # Even random features read where the camera looks from fresh frames (0.19 to 0.27 over
    # seeds 0 to 2), when the held-out frames and their states line up.
    assert frozen['frozen_r2_pan'] > 0.1


def test_a_short_still_view_run_follows_the_loss_and_refuses_arms_without_one(tmp_path):
    row = still_view_bench.run_arm('reconstruction/lr1e-4', 'stripes-orbit', 0, 200, 2)
    for key in ('still_first', 'still_last', 'repeat_first', 'repeat_last'):
        assert 0.0 < row[key] < 1.0, key
    assert row['still_fall'] == pytest.approx(1.0 - row['still_last'] / row['still_first'])
    with pytest.raises(ValueError, match='frozen'):
        still_view_bench.run_benchmark(['frozen'], ['blobs-bounce'], 1, 500, 5, tmp_path, 1)
    with pytest.raises(ValueError, match='--frames'):
        still_view_bench.run_benchmark(['tpc'], ['blobs-bounce'], 1, 150, 5, tmp_path, 1)


def test_perception_node_publishes_what_the_core_computes_for_the_same_frames(tmp_path):
    frames = 30
    run = node_probe.collect('frozen', 'plaid-wander', 0, frames, 10, tmp_path)
    assert run.features.shape == (frames + 10, 64) and len(run.states) == frames + 10
    # The ROI goes a few ms before its frame; the node's 1 Hz report can make it late now and
    # then (3 frames of 6000 in a 3000-frame run): such frames are left out of the comparison.
    seen_as_sent = np.abs(run.used - run.sent).max(axis=1) < 1e-6
    assert seen_as_sent[0] and seen_as_sent.sum() >= len(seen_as_sent) - 2, run.used - run.sent

    core = OnlinePerception(representation_bench.ARMS['frozen'].config(0))
    scene = SyntheticScene(WIDTH, HEIGHT, ALL_FAMILIES['plaid-wander'], seed=1000)
    expected = []
    for frame, centre, pan, _ in node_probe.stream_items(scene, ScriptedActions(0), frames):
        roi = Roi.around(*centre, WIDTH, HEIGHT, DEFAULT_ROI_SIZE, DEFAULT_ROI_SIZE)
        action = np.array([0, 0, 0, 0, 0, pan / PAN_PER_RAD, *roi.centre(WIDTH, HEIGHT)])
        expected.append(core.step(frame, roi, action).features)
    matched = seen_as_sent[:frames]
    np.testing.assert_allclose(run.features[:frames][matched], np.stack(expected)[matched],
                               atol=1e-5)


def test_perception_node_trains_on_every_frame_until_train_is_switched_off(tmp_path):
    frames = 40
    run = node_probe.collect('default', 'speckle-orbit', 1, frames, 20, tmp_path)
    trained = int(run.trained['train_steps'])
    skipped = int(run.trained['train_skipped_budget'])  # a loaded machine thins training
    assert trained > 0 and trained + skipped == frames - 1  # no loss on the very first frame
    assert int(run.after['train_steps']) == trained  # train:=false froze the encoder
    assert np.isfinite(run.features).all()


def test_a_short_drift_run_learns_and_measures_drift():
    row = drift_bench.run_arm('learning', 0, 600)
    assert row['updates'] + row['updates_skipped'] >= 1
    assert row['drift_per_rollout'] > 0.0
    assert -1.0 <= row['reward_last_25pct'] <= 0.0
    assert drift_bench.run_arm('frozen', 0, 300)['drift_per_rollout'] == 0.0


def test_a_short_learning_run_of_each_kind_of_arm_and_its_table_and_plot(tmp_path):
    rows = [learning_bench.run_arm(arm, 'MiniGrid-Empty-5x5-v0', 0, 1024, str(tmp_path))
            for arm in ('frozen', 'sb3-ppo')]
    for row in rows:
        episodes = read_episodes(Path(row['run_dir']) / 'episodes.csv')
        assert len(episodes) == row['episodes'] >= 5  # Empty-5x5 ends within 100 steps
        assert np.all((episodes[:, 1] >= 0) & (episodes[:, 1] <= 1))
        assert row['steps_per_s'] > 0
        final = episodes[episodes[:, 0] > 0.9 * 1024, 1]  # the last tenth of the steps
        assert (row['final_return'] == pytest.approx(final.mean()) if len(final)
                else np.isnan(row['final_return']))
    table = learning_bench.summarise(rows)
    assert '| MiniGrid-Empty-5x5-v0 | frozen |' in table and '| sb3-ppo |' in table
    (plot,) = learning_bench.plot_curves(rows, tmp_path)
    assert plot.read_bytes()[:4] == b'\x89PNG'


def test_steps_to_reach_a_return_is_the_first_stretch_whose_mean_gets_there():
    steps = np.arange(1, 401) * 10.0  # 400 episodes over 4000 steps: 10 per stretch of 100
    returns = np.where(steps > 2500, 1.0, 0.0)
    returns[50:52] = 1.0  # a lucky pair early on is not enough
    episodes = np.stack([steps, returns, np.ones(400)], axis=1)
    assert learning_bench.steps_to_reach(episodes, 0.8, 4000) == 2600.0
    assert np.isnan(learning_bench.steps_to_reach(episodes[:250], 0.8, 4000))
