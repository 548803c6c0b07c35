"""The agent core: acting continues while the PPO update runs; updates change the policy."""
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import assert_save_abandons_the_update
from perception_rl.actor_critic import ActorCritic, ActorCriticConfig
from perception_rl.agent import Agent, AgentConfig
from perception_rl.checkpoint import load_latest
from perception_rl.curiosity import KINDS, CuriosityConfig, make_curiosity
from perception_rl.ppo import PPOConfig, PPOLearner, UpdateAbandoned
from perception_rl.rollout import Rollout


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


def _after_updates(reward_scale: float) -> tuple[float, float, float]:
    """(value loss of the last update, extrinsic return std, extrinsic scale) after 4 updates
    on rewards of the given scale (the same reward sequence, scaled)."""
    agent = Agent(AgentConfig(rollout_length=64, seed=4, wait_for_update=True))
    rng = np.random.default_rng(5)
    try:
        for _ in range(4 * 64 + 1):
            agent.act(_features(rng), reward=reward_scale * rng.standard_normal())
        while agent.updating:
            time.sleep(0.01)
        agent.act(_features(rng))  # adopts the 4th update
        assert agent.updates == 4
        learner = agent.learner
        return (agent.last_update['value_loss'], float(learner.extrinsic_stats.std[0]),
                learner.extrinsic_scale())
    finally:
        agent.close()


def test_rewards_are_scaled_by_their_return_std_above_the_floor():
    loss_1, std_1, scale_1 = _after_updates(1.0)
    loss_3, std_3, scale_3 = _after_updates(3.0)  # within the clip (10) up to 3.3 sigma
    _, std_small, scale_small = _after_updates(0.01)
    assert std_3 / std_1 == pytest.approx(3.0, rel=0.02) and std_1 > 1.0 > std_small
    assert (scale_1, scale_3) == (std_1, std_3)
    # Scaled by the return's std, rewards 3 times larger train the critic alike (unscaled,
    # the value loss would be 9 times larger) ...
    assert loss_3 == pytest.approx(loss_1, rel=0.2)
    # ... while rewards whose return varies less than the floor are not scaled up.
    assert scale_small == 1.0


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
    assert resumed.learner.extrinsic_stats.count == agent.learner.extrinsic_stats.count
    assert np.array_equal(resumed.learner.extrinsic_stats.var, agent.learner.extrinsic_stats.var)
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



def test_a_detail_seeking_agent_resumes_its_detail_scale_and_focus_rate(tmp_path):
    config = AgentConfig(model=ActorCriticConfig(action_dim=2, discrete=True,
                                                 saccadic_focus=True),
                         ppo=replace(PPOConfig(), focus_reward='detail',
                                     focus_learning_rate=1e-3), rollout_length=32)
    agent = Agent(config)
    rng = np.random.default_rng(4)
    for _ in range(70):
        agent.act_batch(_features(rng)[None], [0.0], [False], [rng.uniform(0.0, 0.03)],
                        rng.uniform(-1.0, 1.0, (1, 2)))
    agent.save(tmp_path)
    agent.close()
    resumed = Agent(config)
    resumed.load(load_latest(tmp_path, 'agent')[0])
    assert resumed.detail_stats.count == agent.detail_stats.count == pytest.approx(70, abs=1e-3)
    assert resumed.learner.focus_reward_stats.count == agent.learner.focus_reward_stats.count > 0
    assert [g['lr'] for g in resumed.learner.optimizer.param_groups] == [3e-4, 1e-3]
    resumed.close()
    # An absolute focus head cannot take a saccadic one's weights; its architecture is the
    # one of checkpoints from before saccades, which therefore still load.
    plain = Agent(AgentConfig(model=ActorCriticConfig(action_dim=2, discrete=True)))
    assert 'saccadic_focus' not in plain.architecture()['model']
    with pytest.raises(ValueError, match='saccadic_focus'):
        plain.load(load_latest(tmp_path, 'agent')[0])
    plain.close()


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


def test_a_resumed_agent_continues_its_counters_and_random_draws(tmp_path):
    agent = Agent(AgentConfig(rollout_length=32, seed=1, wait_for_update=True))
    rng = np.random.default_rng(0)
    for _ in range(70):
        agent.act(_features(rng), reward=0.5)
    agent.save(tmp_path)
    resumed = Agent(AgentConfig(rollout_length=32, seed=99, wait_for_update=True))
    loaded, _ = load_latest(tmp_path, 'agent')
    resumed.load(loaded)
    try:
        assert (resumed.steps, resumed.updates) == (agent.steps, agent.updates)
        assert resumed.learner.rng.random() == agent.learner.rng.random()
        features = _features(rng)
        assert np.array_equal(resumed.act(features).action, agent.act(features).action)
    finally:
        agent.close()
        resumed.close()


def test_an_update_that_goes_non_finite_is_abandoned_and_the_weights_restored():
    config = AgentConfig(rollout_length=32, wait_for_update=True,
                         ppo=PPOConfig(nonfinite_patience=3))
    agent = Agent(config)
    rng = np.random.default_rng(0)
    good = {k: v.clone() for k, v in agent.learner.model.state_dict().items()}
    with torch.no_grad():
        agent.learner.model.critic_ext[0].weight[0, 0] = float('nan')  # a blown-up weight
    try:
        for _ in range(33):  # one full rollout
            agent.act(_features(rng), reward=1.0)
        assert agent._worker.wait_idle(30.0)
        decision = agent.act(_features(rng))
        assert isinstance(agent.last_error, UpdateAbandoned), agent.last_error
        assert 'non-finite gradient steps' in str(agent.last_error)
        assert agent.updates == 0 and agent.learner.last_good.restores == 1
        assert agent.learner.last_good.skipped == 3
        for key, value in agent.learner.model.state_dict().items():
            assert torch.equal(value, good[key]), key
        assert np.isfinite(decision.action).all()
    finally:
        agent.close()


def test_saving_during_a_long_update_abandons_it_and_writes_the_state_before_it(tmp_path):
    agent = Agent(AgentConfig(rollout_length=32, wait_for_update=True))
    rng = np.random.default_rng(0)
    before = {k: v.clone() for k, v in agent.learner.model.state_dict().items()}
    started = threading.Event()
    slow_loss = agent.learner.curiosity.loss

    def slow(*args):  # an update that would take minutes
        started.set()
        time.sleep(0.05)
        return slow_loss(*args)

    agent.learner.curiosity.loss = slow
    agent.learner.config = replace(agent.learner.config, epochs=10_000, target_kl=float('inf'))
    try:
        for _ in range(33):
            agent.act(_features(rng))
        assert started.wait(30.0)
        assert_save_abandons_the_update(agent, tmp_path, before, within_s=3.0)
    finally:
        agent.close()


@pytest.mark.parametrize('discrete, saccadic', [(False, False), (True, False), (True, True)])
def test_decide_draws_and_scores_as_the_distributions_do(discrete, saccadic):
    """decide's plain arithmetic against torch.distributions on the same generator state."""
    model = ActorCritic(ActorCriticConfig(discrete=discrete, action_dim=3 if discrete else 2,
                                          saccadic_focus=saccadic))
    with torch.no_grad():
        model.focus_log_std.fill_(0.2)  # not the initial value, so that it counts
        if not discrete:
            model.actor_log_std.fill_(-0.3)
        model.focus[-1].weight.mul_(30.0)  # a saccadic head's spread then varies by state
    features = np.random.default_rng(0).standard_normal((5, 64))
    centres = np.random.default_rng(1).uniform(-1.0, 1.0, (5, 3))  # centre and detail
    decisions = model.decide(features, torch.Generator().manual_seed(7), centres)
    f = torch.as_tensor(features, dtype=torch.float32)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        policy = model.policy(f)
        focus_policy = model.focus_policy(f, torch.as_tensor(centres, dtype=torch.float32))
        if saccadic:  # a move from where the fovea is, with a spread per state
            assert focus_policy.mean.sub(torch.as_tensor(centres[:, :2])).abs().max() < 0.5
            assert focus_policy.stddev.std(dim=0).min() > 0.0
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


def test_a_focus_reward_goes_with_the_decision_whose_focus_chose_that_view():
    agent = Agent(AgentConfig(rollout_length=16))
    rng = np.random.default_rng(2)
    try:
        # Call k reports the surprise of the frame seen through decision k-1's focus.
        agent.act_batch(_features(rng)[None], [0.0], [False], [10.0])
        agent.act_batch(_features(rng)[None], [0.0], [False], [11.0])
        agent.act_batch(_features(rng)[None], [0.0], [True], [12.0])  # a new episode's frame
        agent.act_batch(_features(rng)[None], [0.0], [False], None)  # none measured
        agent.act_batch(_features(rng)[None], [0.0], [False], [14.0])
        buffer = agent.buffers[0]
        np.testing.assert_array_equal(buffer._fr[:buffer.size], [11.0, np.nan, np.nan, 14.0])
        # Each row keeps the fovea's context when its focus was chosen: the detail it saw.
        details = buffer._context[:buffer.size, 2]
        assert details[3] < details[0] < details[1]  # none measured: as a detail of 0
    finally:
        agent.close()


def _focus_after_updates(focus_reward: str) -> float:
    """The focus head's mean x over the rollout's features after 10 updates on one rollout
    whose fovea detail grows with the x the focus chose (and whose task rewards are noise)."""
    torch.manual_seed(0)
    model = ActorCritic(ActorCriticConfig(action_dim=2, discrete=True))
    learner = PPOLearner(model, make_curiosity(CuriosityConfig(), 64, 2, True),
                         replace(PPOConfig(), focus_reward=focus_reward))
    rng = np.random.default_rng(3)
    steps = 256
    features = rng.standard_normal((steps, 64)).astype(np.float32)
    focus = rng.normal(0.0, 0.6, (steps, 2)).astype(np.float32)
    focus_log_probs = model.focus_policy(torch.as_tensor(features), torch.zeros(steps, 3)
                                         ).log_prob(torch.as_tensor(focus)).sum(dim=1)
    zeros = np.zeros(steps, np.float32)
    gaps = zeros.copy()
    gaps[-1] = 1.0
    rollout = Rollout(
        features, np.roll(features, -1, 0), rng.integers(0, 2, (steps, 1)).astype(np.float32),
        np.full(steps, np.log(0.5), np.float32), focus, focus_log_probs.detach().numpy(),
        zeros, zeros, rng.normal(0.0, 0.1, steps).astype(np.float32), zeros, gaps,
        focus[:, 0].copy(), np.zeros((steps, 3), np.float32))
    for _ in range(10):
        learner.update(rollout)
    with torch.no_grad():
        return float(model.focus(torch.as_tensor(features))[:, 0].mean())


def test_the_focus_head_learns_to_look_where_the_fovea_sees_detail():
    assert _focus_after_updates('detail') > 0.1
    # On the task's advantage (noise here) it does not learn to go there.
    assert abs(_focus_after_updates('task')) < 0.05
    with pytest.raises(ValueError, match="'focus_reward' must be one of"):
        PPOLearner(ActorCritic(ActorCriticConfig()), make_curiosity(CuriosityConfig(), 64, 2,
                                                                     False),
                   replace(PPOConfig(), focus_reward='surprise'))
