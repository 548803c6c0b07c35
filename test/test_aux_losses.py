"""The auxiliary-loss family, training cadence, the EMA target and representation health."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from perception_rl.actor_critic import ActorCritic, ActorCriticConfig
from perception_rl.aux_losses import AUX_TERMS, AuxLossConfig, parse_aux_loss
from perception_rl.checkpoint import load_latest
from perception_rl.foveation import Roi
from perception_rl.online_perception import ACTION_DIM, OnlinePerception, PerceptionConfig
from perception_rl.policy_weights import flatten_policy, unflatten_policy
from perception_rl.representation_health import RepresentationHealth, effective_rank
from perception_rl.synthetic_scene import SCENE_FAMILIES, SyntheticScene

ROI = Roi.centred(640, 480, 128, 128)


def _core(spec='tpc+vicreg', **kwargs) -> OnlinePerception:
    torch.set_num_threads(1)
    return OnlinePerception(PerceptionConfig(aux=replace(AuxLossConfig(), spec=spec), **kwargs))


def _frames(n, seed=0):
    scene = SyntheticScene(spec=SCENE_FAMILIES['blobs-bounce'], seed=seed)
    return [scene.step() for _ in range(n)]


def test_aux_loss_specs_parse_and_bad_ones_say_why():
    assert parse_aux_loss('none') == {}
    assert parse_aux_loss('tpc') == {'tpc': 1.0}
    assert parse_aux_loss(' contrastive + vicreg:0.25 ') == {'contrastive': 1.0, 'vicreg': 0.25}
    for bad, reason in [('telepathy', 'not one of'), ('tpc:x', 'not a number'),
                        ('tpc:-1', 'positive'), ('tpc+tpc', 'twice'), ('', 'not one of'),
                        ('tpc:nan', 'positive')]:
        with pytest.raises(ValueError, match=reason):
            parse_aux_loss(bad)


@pytest.mark.parametrize('term', AUX_TERMS)
def test_every_term_trains_the_encoder_with_finite_losses(term):
    core = _core(term)
    before = [p.detach().clone() for p in core.encoder.parameters()]
    steps = [core.step(f, ROI, np.full(ACTION_DIM, 0.1, np.float32)) for f in _frames(20)]
    trained = [s for s in steps if s.trained]
    assert trained, f'{term} never trained'
    assert all(np.isfinite(s.loss_terms[term]) and np.isfinite(s.loss_terms['total'])
               for s in trained)
    changed = [not torch.equal(a, b) for a, b in zip(before, core.encoder.parameters())]
    assert any(changed)
    if term == 'contrastive':  # needs more history than the gap before its first step
        assert not steps[5].trained and steps[15].trained


def test_variance_covariance_keeps_the_features_dependent_on_the_input():
    """Coherence alone is happiest with constant features; vicreg holds their spread across
    inputs. The spread is measured by the final encoder on many frames, because the stream's
    own spread could come from the encoder drifting over time instead."""
    frames = _frames(300, seed=1)
    spreads = {}
    for spec in ('coherence', 'coherence+vicreg'):
        core = _core(spec, learning_rate=1e-3)
        for frame in frames:
            core.step(frame, ROI, np.zeros(ACTION_DIM, np.float32))
        core.training = False
        final = [core.step(f, ROI, np.zeros(ACTION_DIM, np.float32)).features
                 for f in frames[::3]]
        spreads[spec] = np.stack(final).std(axis=0).mean()
    assert spreads['coherence+vicreg'] > 0.2, spreads
    assert spreads['coherence+vicreg'] > 2.0 * spreads['coherence'], spreads


def test_reconstruction_memory_keeps_at_most_its_capacity_of_frames():
    core = OnlinePerception(PerceptionConfig(aux=replace(
        AuxLossConfig(), spec='reconstruction', reconstruction_memory=4)))
    for frame in _frames(12):
        core.step(frame, ROI, np.zeros(ACTION_DIM, np.float32))
    term = core.aux.terms['reconstruction']
    assert len(term.memory) == 4 and len(term.memory_loss) == 4
    assert _core('reconstruction').aux.terms['reconstruction'].capacity == 0


def test_reconstruction_redraws_the_fovea_only_when_it_is_weighted():
    assert _core('reconstruction').aux.terms['reconstruction'].fovea_decoder is None
    core = OnlinePerception(PerceptionConfig(aux=replace(
        AuxLossConfig(), spec='reconstruction', reconstruction_fovea=0.5)))
    decoder = core.aux.terms['reconstruction'].fovea_decoder
    before = [p.detach().clone() for p in decoder.parameters()]
    for frame in _frames(5):
        core.step(frame, ROI, np.zeros(ACTION_DIM, np.float32))
    assert core.train_steps == 4
    assert all(not torch.equal(a, b) for a, b in zip(before, decoder.parameters()))


def test_training_every_k_frames_and_within_a_budget_counts_what_it_skips():
    core = _core(train_every=3)
    steps = [core.step(f, ROI, np.zeros(ACTION_DIM, np.float32)) for f in _frames(30)]
    assert sum(s.trained for s in steps) == 10 - 1  # frame 0 has no previous frame
    assert core.skipped_cadence == 20
    core = _core(train_budget_ms=15.0)
    frames = _frames(10)
    core.step(frames[0], ROI, np.zeros(ACTION_DIM, np.float32))
    assert core.step(frames[1], ROI, np.zeros(ACTION_DIM, np.float32), lateness_ms=0.0).trained
    late = core.step(frames[2], ROI, np.zeros(ACTION_DIM, np.float32), lateness_ms=40.0)
    assert not late.trained and core.skipped_budget == 1
    assert late.features.shape == (64,)  # a skipped frame still gets its features
    core.expected_tick_ms = 100.0  # one freak slow step must not starve training for good
    resumed = [core.step(f, ROI, np.zeros(ACTION_DIM, np.float32)).trained for f in frames * 3]
    assert not resumed[0] and any(resumed), resumed


def test_the_ema_target_follows_slowly_and_can_be_published():
    core = _core(target_decay=0.9, publish='target')
    frames = _frames(12)
    first = [p.detach().clone() for p in core.target.parameters()]
    for frame in frames:
        core.step(frame, ROI, np.zeros(ACTION_DIM, np.float32))
    with torch.no_grad():
        online, target = list(core.encoder.parameters()), list(core.target.parameters())
        moved = sum(float((t - f).abs().sum()) for t, f in zip(target, first))
        gap = sum(float((t - o).abs().sum()) for t, o in zip(target, online))
        assert moved > 0 and gap > 0
        core.training = False
        step = core.step(frames[0], ROI, np.zeros(ACTION_DIM, np.float32))
        expected = core.target(*core.encoder.views(frames[0], ROI, core.device))[0].numpy()
    np.testing.assert_allclose(step.features, expected, atol=1e-5)
    with pytest.raises(ValueError, match='target_decay'):
        _core(publish='target')


def test_frozen_bottom_convolutions_stay_at_their_initial_weights():
    core = _core(frozen_conv_layers=1)
    first_conv = core.encoder.fovea[0][0].weight.detach().clone()
    second_conv = core.encoder.fovea[0][2].weight.detach().clone()
    for frame in _frames(10):
        core.step(frame, ROI, np.zeros(ACTION_DIM, np.float32))
    assert torch.equal(first_conv, core.encoder.fovea[0][0].weight)
    assert not torch.equal(second_conv, core.encoder.fovea[0][2].weight)


def test_reference_features_drift_only_while_training():
    core = _core()
    assert core.reference_features() is None
    frames = _frames(20)
    core.step(frames[0], ROI, np.zeros(ACTION_DIM, np.float32))
    start = core.reference_features()
    for frame in frames[1:]:
        core.step(frame, ROI, np.zeros(ACTION_DIM, np.float32))
    trained = core.reference_features()
    assert np.abs(trained - start).max() > 1e-4
    core.training = False
    for frame in frames:
        core.step(frame, ROI, np.zeros(ACTION_DIM, np.float32))
    np.testing.assert_array_equal(core.reference_features(), trained)


def test_pisco_takes_the_agents_policy_through_the_flat_message_layout():
    agent_model = ActorCritic(ActorCriticConfig())
    labels, data = flatten_policy(agent_model)
    core = _core('pisco+vicreg')
    core.load_policy(*unflatten_policy(labels, data))
    term = core.aux.terms['pisco']
    for name, value in agent_model.actor.state_dict().items():
        assert torch.equal(term.actor.state_dict()[name], value)
    three_actions = flatten_policy(ActorCritic(ActorCriticConfig(action_dim=3)))
    with pytest.raises(ValueError, match='do not fit|log_std'):
        core.load_policy(*unflatten_policy(*three_actions))
    with pytest.raises(ValueError, match='add up'):
        unflatten_policy(labels, data[:-1])
    with pytest.raises(ValueError, match='non-finite'):
        unflatten_policy(labels, np.full_like(data, np.nan))
    with pytest.raises(ValueError, match='pisco'):
        _core('tpc').load_policy(*unflatten_policy(labels, data))


def test_a_checkpoint_with_target_and_pisco_round_trips(tmp_path):
    core = _core('pisco+vicreg', target_decay=0.99, publish='target')
    frames = _frames(10)
    for frame in frames:
        core.step(frame, ROI, np.zeros(ACTION_DIM, np.float32))
    core.save(tmp_path)
    restored = _core('pisco+vicreg', target_decay=0.99, publish='target', seed=5)
    checkpoint, problems = load_latest(tmp_path, 'perception')
    assert not problems
    restored.load(checkpoint)
    for a, b in zip(core.target.parameters(), restored.target.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match='aux_terms'):
        _core('tpc+vicreg', target_decay=0.99, publish='target').load(checkpoint)


def test_effective_rank_and_health_summary():
    rng = np.random.default_rng(0)
    assert effective_rank(rng.normal(size=(2000, 8))) == pytest.approx(8, rel=0.05)
    line = np.outer(rng.normal(size=500), rng.normal(size=8))
    assert effective_rank(line) == pytest.approx(1, rel=0.01)
    assert effective_rank(np.ones((50, 8))) == 0.0
    health = RepresentationHealth()
    for _ in range(50):
        health.add(rng.normal(size=64).astype(np.float32))
    reference = np.zeros(64, np.float32)
    first = health.summary(reference, now=10.0)
    assert np.isnan(first['drift_per_s']) and first['effective_rank'] > 20
    second = health.summary(reference + 0.5, now=12.0)
    assert second['drift_per_s'] == pytest.approx(0.25)
