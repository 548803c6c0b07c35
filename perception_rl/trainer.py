"""Lock-step training on a Gymnasium task: online perception and the agent, without ROS.

The same core classes as the nodes (OnlinePerception, Agent), one environment step per
decision, as fast as the machine allows. A run directory gets:

- episodes.csv: `step,return,length`, one row per finished episode;
- tensorboard/: episode returns and lengths, perception loss terms, agent update statistics,
  steps per second;
- checkpoints/: perception and agent checkpoints, periodically and at the end;
- learning_curve.png: episode returns against steps, with their running mean.
"""
import csv
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from perception_rl.actor_critic import ActorCriticConfig
from perception_rl.agent import Agent, AgentConfig, with_focus
from perception_rl.aux_losses import AuxLossConfig
from perception_rl.curiosity import CuriosityConfig
from perception_rl.encoder import EncoderConfig
from perception_rl.foveation import Roi
from perception_rl.gym_tasks import ImageTask
from perception_rl.online_perception import OnlinePerception, PerceptionConfig
from perception_rl.ppo import FOCUS_REWARDS, PPOConfig
from perception_rl.scalar_log import ScalarLog

RETURN_WINDOW = 20
"""Episodes in the running mean of the return (progress line and learning curve)."""


@dataclass
class TrainConfig:
    """One lock-step training run."""

    env_id: str
    steps: int
    seed: int = 0
    aux_loss: str = AuxLossConfig.spec
    """The perception loss; 'none' keeps the random encoder frozen."""
    reconstruction_fovea: float = AuxLossConfig.reconstruction_fovea
    """Weight of redrawing the fovea in the reconstruction loss (0: the periphery only)."""
    envs: int = 8
    """Environments stepped in lock-step; perception and the agent take them as one batch."""
    curiosity: str = 'icm'
    intrinsic_coef: float = 0.1
    """Weight of the curiosity advantage."""
    rollout_length: int = 1024
    """Transitions per PPO update, over all environments."""
    entropy_coef: float = 0.01
    learning_rate: float = 3e-4
    """Adam learning rate of the agent."""
    perception_learning_rate: float = PerceptionConfig.learning_rate
    train_every: int = 1
    """Perception trains on one frame in this many."""
    frozen_conv_layers: int = PerceptionConfig.frozen_conv_layers
    """Bottom convolutions of each perception stream kept at their random weights (0 to 3)."""
    orthogonal_gradient_decay: float = PerceptionConfig.orthogonal_gradient_decay
    """Perception's gradient-history decay for orthogonal gradients (0: off)."""
    orthogonal_gradient_baseline_decay: float = PerceptionConfig.orthogonal_gradient_baseline_decay
    """Perception's decay of the gradient baseline the projection leaves in (0: none)."""
    roi_fraction: float = 0.25
    """Side of the fovea region as a fraction of the frame's shorter side."""
    fovea_stream: str = EncoderConfig.fovea_stream
    """'spatial' or 'pooled': how the fovea stream summarises its view (EncoderConfig)."""
    fixed_fovea: bool = False
    """Keep the fovea at the frame's centre (the baseline learned foveation must beat)."""
    focus: str = 'task'
    """How the focus head learns where to look. 'task': an absolute fovea centre from the
    features, by REINFORCE on the task's advantage. 'detail': saccades from where the fovea
    is, rewarded by the detail the fovea then sees beyond the periphery (perception's
    `fovea_detail`), whatever the task (docs/learning_benchmark.md)."""
    checkpoint_every: int = 50_000
    """Steps between checkpoints (one is always written at the end)."""


def validate(config: TrainConfig) -> None:
    """ValueError naming the option when the run cannot go ahead."""
    if config.steps < 1:
        raise ValueError(f'--steps must be at least 1, not {config.steps}')
    if not 0.0 < config.roi_fraction <= 1.0:
        raise ValueError(f'--roi-fraction must lie in (0, 1], not {config.roi_fraction}')
    if config.focus not in FOCUS_REWARDS:
        raise ValueError(f"--focus must be one of {', '.join(FOCUS_REWARDS)}, not "
                         f'{config.focus!r}')
    if config.envs < 1:
        raise ValueError(f'--envs must be at least 1, not {config.envs}')
    if config.rollout_length < 16 or config.rollout_length % config.envs:
        raise ValueError(f'--rollout-length must be a multiple of --envs ({config.envs}) and '
                         f'at least 16, not {config.rollout_length}')


class ProgressBar:
    """A live bar on a terminal; elsewhere a line every tenth of the run."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.stream = total, stream
        self._tty = stream.isatty()
        self._started = time.monotonic()
        self._last_shown = -1.0
        self._tenth = -1

    def show(self, step: int, episodes: int, mean_return: float, force: bool = False) -> None:
        now = time.monotonic()
        elapsed = max(now - self._started, 1e-6)
        rate = step / elapsed
        done = step / self.total
        text = (f'{step}/{self.total} steps  {rate:6.0f} steps/s  '
                f'ETA {(self.total - step) / max(rate, 1e-6):5.0f} s  episodes {episodes}  '
                f'return({RETURN_WINDOW}) {mean_return:+.3f}')
        if self._tty:
            if force or now - self._last_shown >= 0.2:
                bar = '#' * int(30 * done)
                print(f'\r[{bar:30s}] {text}', end='', file=self.stream, flush=True)
                self._last_shown = now
        elif int(10 * done) > self._tenth or force:
            self._tenth = int(10 * done)
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._tty:
            print(file=self.stream)


def train(config: TrainConfig, out: Path, progress: bool = True) -> dict:
    """Run the learner for config.steps environment steps; a summary of the run."""
    validate(config)
    torch.set_num_threads(1)
    tasks = [ImageTask(config.env_id, config.seed + 10_007 * i) for i in range(config.envs)]
    task = tasks[0]
    try:
        if 'pisco' in AuxLossConfig(spec=config.aux_loss).weights and task.discrete:
            raise ValueError('--aux-loss pisco needs a continuous-action agent; '
                             f'{config.env_id} has discrete actions')
        core = OnlinePerception(PerceptionConfig(
            encoder=replace(EncoderConfig(), fovea_stream=config.fovea_stream),
            aux=replace(AuxLossConfig(), spec=config.aux_loss, policy_actions=task.action_dim,
                        reconstruction_fovea=config.reconstruction_fovea),
            action_dim=task.action_dim + 2, learning_rate=config.perception_learning_rate,
            train_every=config.train_every, frozen_conv_layers=config.frozen_conv_layers,
            orthogonal_gradient_decay=config.orthogonal_gradient_decay,
            orthogonal_gradient_baseline_decay=config.orthogonal_gradient_baseline_decay,
            seed=config.seed))
        agent = Agent(with_focus(AgentConfig(
            model=ActorCriticConfig(action_dim=task.action_dim, discrete=task.discrete),
            curiosity=CuriosityConfig(kind=config.curiosity),
            ppo=replace(PPOConfig(), learning_rate=config.learning_rate,
                        entropy_coef=config.entropy_coef, int_coef=config.intrinsic_coef),
            rollout_length=config.rollout_length, seed=config.seed, wait_for_update=True),
            config.focus), streams=config.envs)
    except ValueError:
        for each in tasks:
            each.close()
        raise
    out.mkdir(parents=True, exist_ok=True)
    log = ScalarLog(str(out / 'tensorboard'))
    bar = ProgressBar(config.steps) if progress else None
    run = _Episodes(out / 'episodes.csv', log, config.envs)
    try:
        started = time.monotonic()
        _loop(config, tasks, core, agent, run, log, out, bar)
        elapsed = time.monotonic() - started
        core.save(out / 'checkpoints')
        agent.save(out / 'checkpoints')
    finally:
        if bar is not None:
            bar.close()
        run.close()
        agent.close()
        for each in tasks:
            each.close()
        log.close()
    plot_learning_curve(out / 'episodes.csv', out / 'learning_curve.png',
                        f'{config.env_id}, aux_loss {config.aux_loss}, seed {config.seed}')
    return {'env': config.env_id, 'seed': config.seed, 'aux_loss': config.aux_loss,
            'steps': run.steps, 'steps_per_s': run.steps / elapsed,
            'episodes': len(run.returns), 'final_return': _recent_mean(run.returns),
            'agent_updates': agent.updates, 'perception_train_steps': core.train_steps}


class _Episodes:
    """Per-environment returns and lengths; finished episodes go to episodes.csv at once."""

    def __init__(self, path: Path, log: ScalarLog, envs: int):
        self._file = open(path, 'w', newline='')
        self._writer = csv.writer(self._file)
        self._writer.writerow(['step', 'return', 'length'])
        self._log = log
        self.returns: list[float] = []
        self.current = np.zeros(envs)
        self.lengths = np.zeros(envs, int)
        self.steps = 0

    def add(self, env: int, reward: float, done: bool) -> None:
        """One environment step of environment `env`."""
        self.steps += 1
        self.current[env] += reward
        self.lengths[env] += 1
        if done:
            episode_return, length = float(self.current[env]), int(self.lengths[env])
            self._writer.writerow([self.steps, episode_return, length])
            self._file.flush()
            self.returns.append(episode_return)
            self._log.write({'episode/return': episode_return, 'episode/length': length},
                            self.steps)
            self.current[env], self.lengths[env] = 0.0, 0

    def close(self) -> None:
        self._file.close()


def _loop(config: TrainConfig, tasks: list[ImageTask], core: OnlinePerception, agent: Agent,
          run: _Episodes, log: ScalarLog, out: Path, bar: ProgressBar | None) -> None:
    """Step every environment once per tick until config.steps steps are done."""
    envs, action_dim = len(tasks), tasks[0].action_dim
    frames = [task.reset() for task in tasks]
    centres = np.zeros((envs, 2), np.float32)
    previous_actions = np.zeros((envs, action_dim), np.float32)
    rewards, dones = np.zeros(envs), np.zeros(envs, bool)
    starts = np.ones(envs, bool)
    updates_logged, next_checkpoint, next_speed = 0, config.checkpoint_every, 1000
    started = time.monotonic()
    while run.steps < config.steps:
        rois = fovea_rois(frames, centres, config.roi_fraction)
        seen = core.step_batch(frames, rois, np.concatenate([previous_actions, centres], axis=1),
                               starts, detail=config.focus == 'detail')
        decisions = agent.act_batch(seen.features, rewards, dones, seen.fovea_detail,
                                    centres.copy())
        for i, (task, decision) in enumerate(zip(tasks, decisions)):
            frames[i], rewards[i], terminated, truncated = task.step(decision.action)
            dones[i] = terminated or truncated
            previous_actions[i] = task.action_vector(decision.action)
            centres[i] = 0.0 if config.fixed_fovea else np.clip(decision.focus, -1.0, 1.0)
            run.add(i, rewards[i], dones[i])
            starts[i] = dones[i]
            if dones[i]:
                frames[i] = task.reset()
                centres[i] = 0.0
        if seen.loss_terms and core.train_steps % 100 == 0:
            log.write({f'perception/{k}': v for k, v in seen.loss_terms.items()}, run.steps)
        if agent.updates > updates_logged:
            updates_logged = agent.updates
            log.write({f'agent/{k}': v for k, v in agent.last_update.items()}, run.steps)
        if run.steps >= next_speed:
            next_speed += 1000
            log.write({'speed/steps_per_s': run.steps / (time.monotonic() - started)},
                      run.steps)
        if run.steps >= next_checkpoint:
            next_checkpoint += config.checkpoint_every
            core.save(out / 'checkpoints')
            agent.save(out / 'checkpoints')
        if bar is not None:
            bar.show(min(run.steps, config.steps), len(run.returns), _recent_mean(run.returns),
                     force=run.steps >= config.steps)


def fovea_rois(frames: list[np.ndarray], centres: np.ndarray, fraction: float) -> list[Roi]:
    """Each frame's fovea region: a square of `fraction` of its shorter side around its centre
    [-1, 1]."""
    rois = []
    for frame, centre in zip(frames, centres):
        height, width = frame.shape[:2]
        side = round(fraction * min(height, width))
        rois.append(Roi.around(*centre, width, height, side, side))
    return rois


def _recent_mean(returns: list[float]) -> float:
    return float(np.mean(returns[-RETURN_WINDOW:])) if returns else 0.0


def read_episodes(path: Path) -> np.ndarray:
    """episodes.csv as a float array [episodes, 3] of (step, return, length)."""
    data = np.loadtxt(path, delimiter=',', skiprows=1, ndmin=2)
    return data.reshape(-1, 3)


def plot_learning_curve(csv_path: Path, png_path: Path, title: str) -> None:
    """Episode returns against steps, and their running mean over RETURN_WINDOW episodes."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt
    episodes = read_episodes(csv_path)
    figure, axes = plt.subplots(figsize=(7, 4))
    if len(episodes):
        steps, returns = episodes[:, 0], episodes[:, 1]
        axes.plot(steps, returns, '.', alpha=0.3, label='episode return')
        window = min(RETURN_WINDOW, len(returns))
        running = np.convolve(returns, np.ones(window) / window, mode='valid')
        axes.plot(steps[window - 1:], running, label=f'mean of {window} episodes')
        axes.legend(loc='lower right')
    axes.set_xlabel('environment steps')
    axes.set_ylabel('return')
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    plt.close(figure)
