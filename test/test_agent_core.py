"""The agent core: acting continues while the PPO update runs; updates change the policy."""
from dataclasses import replace

import numpy as np
import torch

from perception_rl.agent import Agent, AgentConfig
from perception_rl.checkpoint import load_latest


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
        assert agent.buffer.size == 0 and agent.updates == 0 and not agent.updating
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

