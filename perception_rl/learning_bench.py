"""Does the agent learn from what perception gives it, and how fast? Measured against baselines.

Each run trains one arm on one Gymnasium task for N steps with one seed and keeps its
episodes.csv:

- frozen: the agent on the frozen random encoder's features (`aux_loss none`);
- online: the agent on online perception's features (the default `aux_loss`);
- online-orth: online perception with orthogonal gradients (`orthogonal_gradient_decay` 0.9);
- online-orth-baseline: the same, removing only what the recent gradients share beyond their
  slow average (`orthogonal_gradient_baseline_decay` 0.999);
- detail-fovea: online perception, the focus head learning where to look from fovea detail
  (`perception-rl train --focus detail`);
- fixed-fovea: online perception with the fovea held at the frame's centre;
- frozen-detail-fovea, frozen-fixed-fovea: the same two on the frozen random encoder;
- sb3-ppo: an end-to-end pixel PPO baseline, Stable-Baselines3's CnnPolicy (Nature CNN), with
  the same environments, steps, environments in parallel and rollout size.

The table gives, per task and arm over seeds, the mean return of the episodes in the last
tenth of the steps, the steps until the mean return over a fortieth of the steps first
reaches 0.8, and the steps per second; a plot per task shows the mean curve of each arm.
"""
import csv
import time
from pathlib import Path

import numpy as np

from perception_rl.bench_runs import groups, mean_std, run_jobs
from perception_rl.trainer import TrainConfig, read_episodes, train

ARMS = ('frozen', 'online', 'online-orth', 'online-orth-baseline', 'detail-fovea',
        'fixed-fovea', 'frozen-detail-fovea', 'frozen-fixed-fovea', 'sb3-ppo')
TASKS = ('MiniGrid-Empty-5x5-v0', 'MiniGrid-DoorKey-5x5-v0', 'perception_rl/Foveation-v1',
         'perception_rl/FoveationOffCentre-v1')
FOVEATION_OPTIONS = {'fovea_stream': 'pooled', 'reconstruction_fovea': 1.0,
                     'frozen_conv_layers': 3}
"""Trainer options the foveation tasks need: their stripes must read the same wherever the
fovea has them (a fovea that moves does not centre them), online perception must redraw the
fovea at full weight to keep them (at 0.1 it erased them from the pooled stream), and it
trains the layers above the convolutions only (trained convolutions learned where in the
fovea the stripes were, and the pooled stream no longer read them the same everywhere)."""
ARM_OPTIONS = {'online-orth': {'orthogonal_gradient_decay': 0.9},
               'online-orth-baseline': {'orthogonal_gradient_decay': 0.9,
                                        'orthogonal_gradient_baseline_decay': 0.999}}
"""Trainer options of the arms that differ from the defaults in perception's settings only."""
TASK_OPTIONS = {'perception_rl/Foveation-v1': FOVEATION_OPTIONS,
                'perception_rl/FoveationOffCentre-v1': FOVEATION_OPTIONS}
FINAL_SHARE = 0.1
"""The last tenth of the steps: where the final return is averaged."""
LEVEL = 0.8
"""The mean return whose first reach tells how fast an arm learns."""


def run_arm(arm: str, env_id: str, seed: int, steps: int, out: str) -> dict:
    """Train one arm; its summary row (episodes.csv stays in `out`)."""
    run_dir = Path(out) / env_id.replace('/', '_') / f'{arm}-seed{seed}'
    if arm == 'sb3-ppo':
        steps_per_s = _run_sb3(env_id, seed, steps, run_dir)
    else:
        frozen = arm == 'frozen' or arm.startswith('frozen-')
        config = TrainConfig(env_id, steps, seed, fixed_fovea=arm.endswith('fixed-fovea'),
                             focus='detail' if arm.endswith('detail-fovea') else TrainConfig.focus,
                             aux_loss='none' if frozen else TrainConfig.aux_loss,
                             **ARM_OPTIONS.get(arm, {}),
                             **TASK_OPTIONS.get(env_id, {}))
        steps_per_s = train(config, run_dir, progress=False)['steps_per_s']
    episodes = read_episodes(run_dir / 'episodes.csv')
    final = episodes[episodes[:, 0] > (1.0 - FINAL_SHARE) * steps]
    return {'task': env_id, 'arm': arm, 'seed': seed, 'steps': steps,
            'final_return': float(final[:, 1].mean()) if len(final) else float('nan'),
            'steps_to_level': steps_to_reach(episodes, LEVEL, steps),
            'episodes': len(episodes), 'steps_per_s': steps_per_s, 'run_dir': str(run_dir)}


def steps_to_reach(episodes: np.ndarray, level: float, steps: int, bins: int = 40) -> float:
    """The end of the first of `bins` equal stretches of steps whose episodes' mean return
    reaches `level` (NaN if none does). A stretch holds many episodes, so a lucky run of a few
    does not count."""
    edges = np.linspace(0, steps, bins + 1)
    index = np.digitize(episodes[:, 0], edges[1:-1])
    for b in range(bins):
        returns = episodes[index == b, 1]
        if len(returns) and returns.mean() >= level:
            return float(edges[b + 1])
    return float('nan')


def _run_sb3(env_id: str, seed: int, steps: int, run_dir: Path) -> float:
    """Stable-Baselines3 PPO, CnnPolicy, on the same image observations; steps per second."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    from perception_rl.gym_tasks import make_env

    torch.set_num_threads(1)
    defaults = TrainConfig(env_id, steps)
    run_dir.mkdir(parents=True, exist_ok=True)
    env = make_vec_env(lambda: make_env(env_id, seed), n_envs=defaults.envs, seed=seed)

    class EpisodeLog(BaseCallback):
        def __init__(self, path: Path):
            super().__init__()
            self.file = open(path, 'w', newline='')
            self.writer = csv.writer(self.file)
            self.writer.writerow(['step', 'return', 'length'])

        def _on_step(self) -> bool:
            for info in self.locals['infos']:
                if 'episode' in info:
                    self.writer.writerow([self.num_timesteps, info['episode']['r'],
                                          info['episode']['l']])
            return True

        def _on_training_end(self) -> None:
            self.file.close()

    model = PPO('CnnPolicy', env, n_steps=defaults.rollout_length // defaults.envs,
                batch_size=64, n_epochs=4, ent_coef=defaults.entropy_coef, seed=seed,
                device='cpu', verbose=0)
    started = time.monotonic()
    model.learn(total_timesteps=steps, callback=EpisodeLog(run_dir / 'episodes.csv'))
    elapsed = time.monotonic() - started
    env.close()
    return steps / elapsed


def summarise(rows: list[dict]) -> str:
    """A markdown table: per task and arm, mean ± std over seeds."""
    lines = [f'| task | arm | final return | steps to {LEVEL} | steps/s | episodes | seeds |',
             '| --- | --- | --- | --- | --- | --- | --- |']
    for g in groups(rows, lambda r: (r['task'], ARMS.index(r['arm']))):
        reached = [r for r in g if np.isfinite(r['steps_to_level'])]
        to_level = (f"{mean_std(reached, 'steps_to_level', 0)} ({len(reached)} of {len(g)})"
                    if reached else f'not reached (0 of {len(g)})')
        lines.append(f"| {g[0]['task']} | {g[0]['arm']} | {mean_std(g, 'final_return')} | "
                     f"{to_level} | {mean_std(g, 'steps_per_s', 0)} | "
                     f"{mean_std(g, 'episodes', 0)} | {len(g)} |")
    return '\n'.join(lines)


def plot_curves(rows: list[dict], out: Path, bins: int = 40) -> list[Path]:
    """One PNG per task: each arm's mean return over seeds against steps (binned)."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt
    paths = []
    for task in sorted({r['task'] for r in rows}):
        figure, axes = plt.subplots(figsize=(7, 4))
        for arm in ARMS:
            runs = [r for r in rows if r['task'] == task and r['arm'] == arm]
            if not runs:
                continue
            steps = runs[0]['steps']
            edges = np.linspace(0, steps, bins + 1)
            curves = []
            for run in runs:
                episodes = read_episodes(Path(run['run_dir']) / 'episodes.csv')
                index = np.digitize(episodes[:, 0], edges) - 1
                curves.append([episodes[index == b, 1].mean() if np.any(index == b) else np.nan
                               for b in range(bins)])
            curves = np.array(curves, np.float64)
            seen = np.isfinite(curves).sum(axis=0)
            mean = np.where(seen > 0, np.nansum(curves, axis=0) / np.maximum(seen, 1), np.nan)
            axes.plot((edges[:-1] + edges[1:]) / 2, mean, label=f'{arm} ({len(runs)} seeds)')
        axes.set_xlabel('environment steps')
        axes.set_ylabel('mean episode return')
        axes.set_title(task)
        axes.legend(loc='best')
        figure.tight_layout()
        path = out / f"curves_{task.replace('/', '_')}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        paths.append(path)
    return paths


def run_benchmark(arms: list[str], tasks: list[str], seeds: int, steps: int, out: Path,
                  workers: int) -> list[dict]:
    """Every arm x task x seed, `workers` at a time; results.csv, table.md and curve PNGs."""
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ValueError(f"unknown arm: {', '.join(unknown)} (arms: {', '.join(ARMS)})")
    jobs = [(a, t, s, steps, str(out)) for t in tasks for s in range(seeds) for a in arms]
    rows = run_jobs(run_arm, jobs, out, workers, lambda row: (
        f"{row['task']:28s} {row['arm']:12s} seed {row['seed']}  final return "
        f"{row['final_return']:+.3f}  {row['steps_per_s']:5.0f} steps/s"), summarise)
    plot_curves(rows, out)
    return rows
