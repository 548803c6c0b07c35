"""Does an agent learn worse on features that drift because perception keeps learning?

The agent runs a fixation task on a synthetic scene: it chooses where the fovea looks, and
the reward is how close the fovea centre is to the first object (0 on it, -1 a frame
diagonal away). The same agent, seed for seed, acts on features from perception arms that
differ only in how their features move: frozen random, learning online, or learning with a
slow EMA target encoder published. Reported per arm: the mean reward early and late, and how
far the features of a fixed input drift over one PPO rollout.
"""
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from perception_rl.actor_critic import ActorCriticConfig
from perception_rl.agent import Agent, AgentConfig
from perception_rl.aux_losses import AuxLossConfig
from perception_rl.bench_runs import groups, mean_std, run_jobs
from perception_rl.foveation import DEFAULT_ROI_SIZE, Roi
from perception_rl.online_perception import OnlinePerception, PerceptionConfig
from perception_rl.synthetic_scene import SCENE_FAMILIES, SyntheticScene

WIDTH, HEIGHT = 640, 480
PAN_PER_RAD = 4.0
"""Pixels per frame the background pans for 1 rad/s of the agent's angular.z."""

ARMS = {
    'frozen': PerceptionConfig(aux=replace(AuxLossConfig(), spec='none')),
    'learning': PerceptionConfig(),
    'learning+target': PerceptionConfig(target_decay=0.99, publish='target'),
}


def fixation_reward(centre: np.ndarray, scene: SyntheticScene) -> float:
    """0 with the fovea centred on the first object, -1 a frame diagonal away."""
    target = 2.0 * scene.state()[2:4] - 1.0  # [-1, 1] frame coordinates, as the fovea's
    return float(-np.linalg.norm(np.clip(centre, -1, 1) - target) / (2.0 * np.sqrt(2.0)))


def run_arm(arm: str, seed: int, steps: int) -> dict:
    """One agent learning the fixation task on one perception arm."""
    torch.set_num_threads(1)
    perception = OnlinePerception(replace(ARMS[arm], seed=seed))
    agent = Agent(AgentConfig(model=replace(ActorCriticConfig(), action_dim=1), seed=seed))
    scene = SyntheticScene(WIDTH, HEIGHT, SCENE_FAMILIES['blobs-bounce'], seed=2000 + seed)
    centre, pan, reward = np.zeros(2), 0.0, 0.0
    rewards, drift = [], []
    reference = None
    try:
        for step in range(steps):
            frame = scene.step(pan)
            roi = Roi.around(*centre, WIDTH, HEIGHT, DEFAULT_ROI_SIZE, DEFAULT_ROI_SIZE)
            action = np.array([0, 0, 0, 0, 0, pan / PAN_PER_RAD, *centre], np.float32)
            features = perception.step(frame, roi, action).features
            decision = agent.act(features, reward)
            pan = float(np.clip(decision.action[0], -1, 1)) * PAN_PER_RAD
            centre = np.clip(decision.focus, -1, 1)
            reward = fixation_reward(centre, scene)
            rewards.append(reward)
            if step % agent.config.rollout_length == 0:
                current = perception.reference_features()
                if reference is not None:
                    drift.append(float(np.sqrt(np.mean((current - reference) ** 2))))
                reference = current
    finally:
        agent.close()
    rewards = np.array(rewards)
    tenth = max(len(rewards) // 10, 1)
    return {'arm': arm, 'seed': seed, 'steps': steps,
            'reward_first_10pct': float(rewards[:tenth].mean()),
            'reward_last_25pct': float(rewards[-len(rewards) // 4:].mean()),
            'drift_per_rollout': float(np.mean(drift)) if drift else 0.0,
            'updates': agent.updates, 'updates_skipped': agent.updates_skipped}


def summarise(rows: list[dict]) -> str:
    """A markdown table per arm: mean ± std over seeds."""
    lines = ['| arm | reward, first 10% | reward, last 25% | feature drift per rollout (RMS) '
             '| PPO updates | seeds |', '| --- | --- | --- | --- | --- | --- |']
    for group in groups(rows, lambda r: r['arm']):
        lines.append(f"| {group[0]['arm']} | {mean_std(group, 'reward_first_10pct')} | "
                     f"{mean_std(group, 'reward_last_25pct')} | "
                     f"{mean_std(group, 'drift_per_rollout', 4)} | "
                     f"{mean_std(group, 'updates', 1)} | {len(group)} |")
    return '\n'.join(lines)


def run_benchmark(arms: list[str], seeds: int, steps: int, out: Path, workers: int
                  ) -> list[dict]:
    """Every arm x seed, `workers` at a time; results.csv and table.md in `out`."""
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ValueError(f"unknown arm: {', '.join(unknown)} (arms: {', '.join(ARMS)})")
    jobs = [(a, s, steps) for s in range(seeds) for a in arms]
    return run_jobs(run_arm, jobs, out, workers, lambda row: (
        f"{row['arm']:16s} seed {row['seed']}  reward {row['reward_first_10pct']:.3f} -> "
        f"{row['reward_last_25pct']:.3f}  drift {row['drift_per_rollout']:.4f}"), summarise)
