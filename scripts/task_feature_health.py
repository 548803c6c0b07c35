"""How much of online perception's features is content and how much drift, on a Gymnasium task?

    .venv/bin/python scripts/task_feature_health.py [--env MiniGrid-DoorKey-5x5-v0]
        [--steps 1500] [--seed 0] [--envs 8] [--aux-loss SPEC] [--learning-rate LR]
        [--orthogonal-gradient-decay D] [--orthogonal-gradient-strength S]
        [--orthogonal-gradient-baseline-decay B]

Steps `perception-rl train`'s 8 environments (or --envs) in lock-step with random actions and the fovea
jumping somewhere new one step in ten, and trains perception on every batch as the trainer
does. Every 250 steps it prints the auxiliary loss, the per-dimension std of the
features over the last 64 steps (what tells inputs apart), their effective rank, and the RMS
drift of a fixed input's features since the last report (what moves under the agent).
"""
import argparse
from dataclasses import replace

import numpy as np
import torch

from perception_rl.aux_losses import AuxLossConfig
from perception_rl.gym_tasks import ImageTask
from perception_rl.online_perception import OnlinePerception, PerceptionConfig
from perception_rl.representation_health import effective_rank
from perception_rl.trainer import TrainConfig, fovea_rois

REPORT_EVERY, WINDOW = 250, 64


def main() -> None:
    defaults = PerceptionConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--env', default='MiniGrid-DoorKey-5x5-v0')
    parser.add_argument('--steps', type=int, default=1500)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--envs', type=int, default=TrainConfig.envs)
    parser.add_argument('--aux-loss', default=AuxLossConfig.spec)
    parser.add_argument('--learning-rate', type=float, default=defaults.learning_rate)
    parser.add_argument('--orthogonal-gradient-decay', type=float,
                        default=defaults.orthogonal_gradient_decay)
    parser.add_argument('--orthogonal-gradient-strength', type=float,
                        default=defaults.orthogonal_gradient_strength)
    parser.add_argument('--orthogonal-gradient-baseline-decay', type=float,
                        default=defaults.orthogonal_gradient_baseline_decay)
    args = parser.parse_args()
    torch.set_num_threads(1)
    envs = args.envs
    tasks = [ImageTask(args.env, args.seed + 10_007 * i) for i in range(envs)]
    action_dim = tasks[0].action_dim
    core = OnlinePerception(PerceptionConfig(
        aux=replace(AuxLossConfig(), spec=args.aux_loss), action_dim=action_dim + 2,
        learning_rate=args.learning_rate,
        orthogonal_gradient_decay=args.orthogonal_gradient_decay,
        orthogonal_gradient_strength=args.orthogonal_gradient_strength,
        orthogonal_gradient_baseline_decay=args.orthogonal_gradient_baseline_decay,
        seed=args.seed))
    rng = np.random.default_rng(args.seed)
    frames = [task.reset() for task in tasks]
    actions = np.zeros((envs, action_dim), np.float32)
    centres = np.zeros((envs, 2), np.float32)
    starts = np.ones(envs, bool)
    published, reference = [], None
    for step in range(1, args.steps + 1):
        rois = fovea_rois(frames, centres, TrainConfig.roi_fraction)
        seen = core.step_batch(frames, rois, np.concatenate([actions, centres], axis=1), starts)
        published.append(seen.features)
        for i, task in enumerate(tasks):
            action = np.array([rng.integers(action_dim)])
            frames[i], _, terminated, truncated = task.step(action)
            actions[i] = task.action_vector(action)
            starts[i] = terminated or truncated
            if starts[i]:
                frames[i] = task.reset()
            if rng.random() < 0.1:
                centres[i] = rng.uniform(-1.0, 1.0, 2)
        if step % REPORT_EVERY == 0:
            current = core.reference_features()
            drift = (float('nan') if reference is None
                     else float(np.sqrt(np.mean((current - reference) ** 2))))
            reference = current
            window = np.concatenate(published[-WINDOW:])
            print(f'step {step:5d}  loss {seen.loss_terms.get("total", float("nan")):.4f}'
                  f'  feature std {window.std(axis=0).mean():.3f}'
                  f'  rank {effective_rank(window):5.1f}  drift since last {drift:.3f}',
                  flush=True)
    for task in tasks:
        task.close()


if __name__ == '__main__':
    main()
