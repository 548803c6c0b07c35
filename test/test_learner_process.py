"""PPO updates in a child process: the same learning as on a thread, state kept across
checkpoints, aborts and a child that dies."""
import os
import resource
import signal
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import assert_save_abandons_the_update
from perception_rl import learner_process
from perception_rl.agent import Agent, AgentConfig
from perception_rl.checkpoint import load_latest
from perception_rl.ppo import PPOConfig, UpdateAbandoned


def _run(agent: Agent, steps: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        agent.act(rng.standard_normal(64).astype(np.float32), reward=float(rng.standard_normal()))


def _lock_step(update_process: bool, **changes) -> Agent:
    return Agent(AgentConfig(rollout_length=32, seed=2, wait_for_update=True,
                             update_process=update_process, **changes))


def _same_learners(a: Agent, b: Agent) -> None:
    """The same state to float rounding: the same arithmetic in two processes may differ in
    the last bits (memory alignment picks the vector path of a reduction)."""
    tensors_a, meta_a = a.learner.state()
    tensors_b, meta_b = b.learner.state()
    assert tensors_a.keys() == tensors_b.keys()
    for key in tensors_a:
        assert torch.allclose(tensors_a[key], tensors_b[key], rtol=1e-4, atol=1e-5), key
    stats_a, stats_b = meta_a.pop('reward_stats'), meta_b.pop('reward_stats')
    assert meta_a == meta_b  # the generator, the counters, Adam's settings
    for kind in stats_a:  # [mean, var, count]
        flat_a, flat_b = (np.hstack([np.ravel(x) for x in stats[kind]])
                          for stats in (stats_a, stats_b))
        assert np.allclose(flat_a, flat_b, rtol=1e-4), kind


def test_an_update_in_a_child_process_learns_as_on_a_thread():
    """One update: over several, rounding differences can flip the KL early stop, after which
    the two runs part ways legitimately."""
    torch.set_num_threads(1)
    here, there = _lock_step(False), _lock_step(True)
    try:
        for agent in (here, there):
            _run(agent, 32 + 1)
            assert agent._worker.wait_idle(60.0) and agent.last_error is None
            agent.act(np.zeros(64, np.float32))  # adopts it
            agent.sync_learner()
            assert agent.updates == 1
        _same_learners(here, there)  # weights, Adam's moments, reward statistics, generator
        for a, b in zip(here.policy.parameters(), there.policy.parameters()):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    finally:
        here.close()
        there.close()


def test_acting_goes_on_while_the_child_updates_and_close_ends_it():
    agent = Agent(AgentConfig(rollout_length=128, seed=1, update_process=True))
    before = [p.detach().clone() for p in agent.policy.parameters()]
    child = agent._process._process
    try:
        _run(agent, 129)
        assert agent.updating
        acted = 0
        while agent.updating:
            _run(agent, 1, seed=acted)
            acted += 1
        assert acted > 0
        _run(agent, 1)
        assert agent.updates == 1 and agent.last_error is None
        assert any(not torch.equal(a, b) for a, b in zip(before, agent.policy.parameters()))
        assert os.sched_getscheduler(child.pid) == os.SCHED_IDLE  # only CPU nothing wants
    finally:
        agent.close()
    assert not child.is_alive()


def test_a_checkpoint_from_the_child_resumes_in_either_kind_of_agent(tmp_path):
    agent = _lock_step(True)
    _run(agent, 3 * 32 + 1)
    agent.save(tmp_path)  # waits for the third update, takes the child's state
    agent.close()
    assert agent.updates == 3
    resumed_here, resumed_there = _lock_step(False), _lock_step(True)
    loaded, _ = load_latest(tmp_path, 'agent')
    try:
        for resumed in (resumed_here, resumed_there):
            resumed.load(loaded)
            assert (resumed.steps, resumed.updates) == (agent.steps, 3)
            _run(resumed, 32 + 1, seed=7)  # learns on from the loaded state (the first
            # decision after loading starts no transition)
            assert resumed._worker.wait_idle(60.0) and resumed.last_error is None
            resumed.act(np.zeros(64, np.float32))
            resumed.sync_learner()
            assert resumed.updates == 4
        _same_learners(resumed_here, resumed_there)
    finally:
        resumed_here.close()
        resumed_there.close()


def test_a_non_finite_update_in_the_child_is_abandoned_and_reported():
    agent = _lock_step(True, ppo=PPOConfig(nonfinite_patience=3))
    good = {k: v.clone() for k, v in agent.learner.model.state_dict().items()}
    count = agent.learner.extrinsic_stats.count
    rng = np.random.default_rng(0)
    try:
        for step in range(33):  # one rollout, a NaN reward in it: every loss is NaN
            agent.act(rng.standard_normal(64).astype(np.float32),
                      reward=float('nan') if step == 10 else 1.0)
        assert agent._worker.wait_idle(60.0)
        agent.act(np.zeros(64, np.float32))
        assert isinstance(agent.last_error, UpdateAbandoned), agent.last_error
        assert agent.updates == 0
        assert (agent.learner.last_good.skipped, agent.learner.last_good.restores) == (3, 1)
        agent.sync_learner()
        for key, value in agent.learner.model.state_dict().items():
            assert torch.equal(value, good[key]), key
        assert agent.learner.extrinsic_stats.count == count  # the statistics restored too
    finally:
        agent.close()


def test_saving_during_a_long_update_in_the_child_abandons_it(tmp_path):
    endless = replace(PPOConfig(), epochs=100_000, target_kl=float('inf'))
    agent = _lock_step(True, ppo=endless)
    before = {k: v.clone() for k, v in agent.learner.model.state_dict().items()}
    try:
        _run(agent, 33)
        assert agent.updating
        assert_save_abandons_the_update(agent, tmp_path, before, within_s=10.0)
    finally:
        agent.close()


def test_a_child_that_dies_mid_update_is_reported_and_a_new_one_takes_the_next(tmp_path):
    endless = replace(PPOConfig(), epochs=100_000, target_kl=float('inf'))
    agent = _lock_step(True, ppo=endless)
    try:
        _run(agent, 33)
        assert agent.updating
        first = agent._process._process
        agent._process.wake()  # a SCHED_IDLE process dies slowly on a busy machine
        os.kill(first.pid, signal.SIGKILL)
        assert agent._worker.wait_idle(120.0), \
            f'child alive {first.is_alive()}, exit code {first.exitcode}, load {os.getloadavg()}'
        agent.act(np.zeros(64, np.float32))  # takes the worker's report
        assert isinstance(agent.last_error, RuntimeError)
        assert 'update process ended' in str(agent.last_error)
        _run(agent, 32, seed=3)  # the next rollout goes to a new child
        assert agent.updating
        agent.save(tmp_path, timeout=0.5)  # the new child's update is stopped and answers
        assert isinstance(agent.last_error, UpdateAbandoned), agent.last_error
        assert agent._process.restarts == 1 and agent._process._process is not first
        assert agent._process._process.is_alive()
    finally:
        agent.close()


def _scheduling(pid: int) -> tuple[int, int]:
    return os.sched_getscheduler(pid), os.getpriority(os.PRIO_PROCESS, pid)


def _until(condition, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


@pytest.mark.skipif(os.geteuid() != 0 and resource.getrlimit(resource.RLIMIT_NICE)[0] < 1,
                    reason='leaving SCHED_IDLE needs CAP_SYS_NICE or an RLIMIT_NICE of 1+')
def test_a_starved_update_wakes_the_child_until_its_next_job(tmp_path, monkeypatch):
    """On a machine kept busy, a SCHED_IDLE update may get no CPU at all (the full suite
    beside two training runs starved it for minutes): after STARVED_AFTER_S the child runs
    at nice 19 as an ordinary process, and goes back to SCHED_IDLE with its next job."""
    monkeypatch.setattr(learner_process, 'STARVED_AFTER_S', 0.0)
    endless = replace(PPOConfig(), epochs=100_000, target_kl=float('inf'))
    agent = _lock_step(True, ppo=endless)
    child = agent._process._process
    try:
        _run(agent, 33)
        assert agent.updating
        assert _until(lambda: _scheduling(child.pid) == (os.SCHED_OTHER, 19)), \
            _scheduling(child.pid)
        agent.save(tmp_path, timeout=0.5)  # the update is stopped and answers
        assert isinstance(agent.last_error, UpdateAbandoned), agent.last_error
        monkeypatch.setattr(learner_process, 'STARVED_AFTER_S', 600.0)
        _run(agent, 32, seed=3)
        assert agent.updating  # the worker thread idles the child as it hands over the job
        assert _until(lambda: _scheduling(child.pid)[0] == os.SCHED_IDLE), \
            _scheduling(child.pid)
    finally:
        agent.close()
    assert not child.is_alive()
