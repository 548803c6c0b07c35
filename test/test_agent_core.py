"""The agent core: acting continues while the PPO update runs; updates change the policy."""
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from perception_rl.actor_critic import ActorCritic, ActorCriticConfig
from perception_rl.agent import Agent, AgentConfig
from perception_rl.checkpoint import load_latest
from perception_rl.curiosity import KINDS, CuriosityConfig


def _features(rng):
    return rng.standard_normal(64).astype(np.float32)


def test_update_runs_in_the_worker_while_acting_goes_on():
    torch.set_num_threads(1)
    agent = Agent(AgentConfig(rollout_length=128, seed=1))
    rng = np.random.default_rng(0)
    before = [p.detach().clone() for p in agent.policy.parameters()]
    try:
        for _ in range(129):  # the 129th decision completes the 128th transition
            agent.act(_features(rng), reward=1.0)
        assert agent.updating, 'the update should have been handed to the worker'
        acted_during_update = 0
        while agent.updating:  # the acting path never waits for the update
            agent.act(_features(rng), reward=1.0)
            acted_during_update += 1
        assert acted_during_update > 0
        agent.act(_features(rng))  # adopts the finished update
        assert agent.updates == 1 and agent.last_error is None
        assert {'policy_loss', 'value_loss', 'approx_kl', 'intrinsic_reward', 'focus_loss',
                'icm_forward', 'icm_inverse'} <= set(agent.last_update)
        assert all(np.isfinite(v) for v in agent.last_update.values())
        after = list(agent.policy.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(before, after))
    finally:
        agent.close()


def test_not_learning_stores_nothing():
    agent = Agent(AgentConfig(rollout_length=16))
    agent.learning = False
    rng = np.random.default_rng(1)
    try:
        for _ in range(40):
            agent.act(_features(rng))
        assert agent.buffers[0].size == 0 and agent.updates == 0 and not agent.updating
    finally:
        agent.close()


def test_checkpoint_round_trip_continues_counters_and_weights(tmp_path):
    rng = np.random.default_rng(2)
    agent = Agent(AgentConfig(rollout_length=32, seed=3))
    for _ in range(70):
        agent.act(_features(rng), reward=0.5)
    agent.save(tmp_path)
    agent.close()
    resumed = Agent(AgentConfig(rollout_length=32, seed=99))
    loaded, problems = load_latest(tmp_path, 'agent')
    resumed.load(loaded)
    assert problems == [] and resumed.steps == 70 and resumed.updates == agent.updates >= 1
    for a, b in zip(agent.learner.model.parameters(), resumed.policy.parameters()):
        assert torch.equal(a, b)
    assert resumed.learner.intrinsic_stats.count == agent.learner.intrinsic_stats.count
    assert np.array_equal(resumed.feature_stats.mean, agent.feature_stats.mean)
    assert resumed.feature_stats.count == agent.feature_stats.count == pytest.approx(70, abs=1e-3)
    resumed.close()


def test_checkpoint_of_another_architecture_is_refused_by_name(tmp_path):
    agent = Agent(AgentConfig())
    agent.save(tmp_path)
    agent.close()
    other = AgentConfig()
    other = replace(other, model=replace(other.model, action_dim=3))
    wider = Agent(other)
    loaded, _ = load_latest(tmp_path, 'agent')
    try:
        wider.load(loaded)
    except ValueError as error:
        assert 'action_dim' in str(error)
    else:
        raise AssertionError('a checkpoint for 2 actions loaded into a 3-action agent')
    finally:
        wider.close()



@pytest.mark.parametrize('curiosity', KINDS)
@pytest.mark.parametrize('discrete', [False, True])
def test_every_curiosity_module_learns_with_either_kind_of_action(curiosity, discrete):
    """One full rollout and its update, in lock-step: nothing dropped, rewards finite."""
    config = AgentConfig(
        model=ActorCriticConfig(action_dim=4 if discrete else 2, discrete=discrete),
        curiosity=CuriosityConfig(kind=curiosity), rollout_length=64, seed=4,
        wait_for_update=True)
    agent = Agent(config)
    rng = np.random.default_rng(3)
    before = [p.detach().clone() for p in agent.learner.curiosity.parameters()]
    try:
        actions = set()
        for _ in range(64 * 3 + 1):
            decision = agent.act(_features(rng), reward=1.0)
            actions.add(tuple(decision.action))
        deadline = time.monotonic() + 30.0
        while agent.updating and time.monotonic() < deadline:
            time.sleep(0.01)
        agent.act(_features(rng))
        assert agent.updates == 3 and agent.updates_skipped == 0 and agent.last_error is None
        assert all(np.isfinite(v) for v in agent.last_update.values())
        if discrete:
            assert actions <= {(float(i),) for i in range(4)} and len(actions) > 1
        if curiosity == 'none':
            assert agent.last_update['intrinsic_reward'] == 0.0
        else:
            assert agent.last_update['intrinsic_reward'] > 0.0
        after = list(agent.learner.curiosity.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(before, after)) or curiosity == 'none'
        if curiosity == 'rnd':  # the random target stays as it was drawn
            assert torch.equal(before[0], agent.learner.curiosity.target[0].weight)
        if curiosity == 'snd':  # the target learns
            assert not torch.equal(before[0], agent.learner.curiosity.target[0].weight)
    finally:
        agent.close()


def test_features_are_standardised_and_the_statistics_follow_drift():
    agent = Agent(AgentConfig(rollout_length=64, feature_horizon=200))
    rng = np.random.default_rng(5)
    pattern = rng.standard_normal(64)
    try:
        for step in range(600):  # a fixed pattern, small differences, a slow drift
            agent.act(pattern + 0.08 * rng.standard_normal(64) + 0.0001 * step)
        stored = agent.buffers[0]._f[:agent.buffers[0].size]
        assert 0.5 < stored.std(axis=0).mean() < 1.5  # the 0.08 differences, made unit
        assert abs(stored.mean()) < 0.5  # the pattern and most of the drift taken away
        assert agent.feature_stats.count == 200
    finally:
        agent.close()


def test_discrete_log_probabilities_and_executed_actions():
    model = ActorCritic(ActorCriticConfig(action_dim=3, discrete=True))
    features = torch.randn(5, 64)
    actions = torch.tensor([[0.0], [1.0], [2.0], [1.0], [0.0]])
    log_probs, entropy = model.evaluate(features, actions)
    expected = torch.log_softmax(model.actor(features), dim=1).gather(1, actions.long())[:, 0]
    assert torch.allclose(log_probs, expected)
    assert torch.all(entropy > 0) and torch.all(entropy <= np.log(3) + 1e-6)
    assert torch.equal(model.executed(actions)[2], torch.tensor([0.0, 0.0, 1.0]))


@pytest.mark.parametrize('discrete', [False, True])
def test_decide_draws_and_scores_as_the_distributions_do(discrete):
    """decide's plain arithmetic against torch.distributions on the same generator state."""
    model = ActorCritic(ActorCriticConfig(discrete=discrete, action_dim=3 if discrete else 2))
    with torch.no_grad():
        model.focus_log_std.fill_(0.2)  # not the initial value, so that it counts
        if not discrete:
            model.actor_log_std.fill_(-0.3)
    features = np.random.default_rng(0).standard_normal((5, 64))
    decisions = model.decide(features, torch.Generator().manual_seed(7))
    f = torch.as_tensor(features, dtype=torch.float32)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        policy, focus_policy = model.policy(f), model.focus_policy(f)
        if discrete:
            action = torch.multinomial(policy.probs, 1, generator=generator).float()
        else:
            action = policy.mean + policy.stddev * torch.randn(policy.mean.shape,
                                                               generator=generator)
        focus = focus_policy.mean + focus_policy.stddev * torch.randn(focus_policy.mean.shape,
                                                                      generator=generator)
        log_prob = model.evaluate(f, action)[0]
        focus_log_prob = focus_policy.log_prob(focus).sum(dim=1)
    for i, d in enumerate(decisions):
        np.testing.assert_allclose(d.action, action[i].numpy(), rtol=1e-6)
        np.testing.assert_allclose(d.focus, focus[i].numpy(), rtol=1e-6)
        assert d.log_prob == pytest.approx(float(log_prob[i]), abs=1e-5)
        assert d.focus_log_prob == pytest.approx(float(focus_log_prob[i]), abs=1e-5)
