"""The agent core: acts on every feature vector, learns in a background worker."""
import copy
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from perception_rl.actor_critic import ActorCritic, ActorCriticConfig, Decision
from perception_rl.checkpoint import (LoadedCheckpoint, check_architecture, config_hash,
                                      generator_tensors, restore_generators, save_checkpoint)
from perception_rl.curiosity import CuriosityConfig, make_curiosity
from perception_rl.devices import resolve_device
from perception_rl.learner_process import LearnerProcess
from perception_rl.ppo import PPOConfig, PPOLearner
from perception_rl.rollout import Rollout, RolloutBuffer, concatenate
from perception_rl.running_stats import RunningMeanStd

CHECKPOINT_PREFIX = 'agent'


@dataclass
class AgentConfig:
    """Everything that defines an agent."""

    model: ActorCriticConfig = field(default_factory=ActorCriticConfig)
    curiosity: CuriosityConfig = field(default_factory=CuriosityConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    rollout_length: int = 256
    """Transitions per PPO update (256 steps are 12.8 s at 20 Hz)."""
    reward_clip: float = 10.0
    """Extrinsic rewards are clipped to [-reward_clip, reward_clip]."""
    feature_horizon: float = 10_000.0
    """Steps over which the running mean and std that standardise the features are taken
    (Huang et al. 2022's observation normalisation, kept following perception's drift)."""
    seed: int = 0
    """Seed of the initial weights and of the action sampling."""
    device: str = 'cpu'
    """Torch device of the learner (PPO and curiosity updates): cpu, cuda or auto. Acting
    stays on the CPU: one small MLP per tick costs less there than a round trip to a GPU."""
    wait_for_update: bool = False
    """When a rollout is full while the previous update still runs, wait for it (lock-step
    training, where no rollout may be lost) instead of dropping the rollout (real time, where
    acting must never wait)."""
    update_process: bool = False
    """Run the updates in a child process (real time: acting never waits for the GIL) rather
    than on a thread (lock-step training: no copies of the state between processes)."""


DETAIL_FOCUS_LEARNING_RATE = 1e-3
"""The focus head's learning rate when it learns from fovea detail: 1e-3 and 3e-3 both
raised the share of steps with the fovea on the foveation task's patch from 9 % to about
25 % (one seed each); 3e-4, the agent's rate, was not measured with this reward."""


def with_focus(config: AgentConfig, focus_reward: str) -> AgentConfig:
    """`config` with the focus head learning from `focus_reward` (ppo.FOCUS_REWARDS): from
    fovea detail, a saccadic head at its own learning rate; from the task, as configured."""
    if focus_reward != 'detail':
        return replace(config, ppo=replace(config.ppo, focus_reward=focus_reward))
    return replace(config, model=replace(config.model, saccadic_focus=True),
                   ppo=replace(config.ppo, focus_reward='detail',
                               focus_learning_rate=DETAIL_FOCUS_LEARNING_RATE))


def make_learner(config: AgentConfig) -> PPOLearner:
    """The learner of an agent with this configuration, its weights drawn from torch's
    current random state."""
    model = ActorCritic(config.model)
    curiosity = make_curiosity(config.curiosity, config.model.feature_dim,
                               config.model.action_dim, config.model.discrete)
    return PPOLearner(model, curiosity, config.ppo, config.seed, resolve_device(config.device))


class UpdateWorker:
    """Runs learner updates on a thread of its own, one at a time, so acting never waits.

    `run_update(rollout)` returns (stats, the new policy weights): the update itself, here or
    in a child process.
    """

    def __init__(self, run_update):
        self._run_update = run_update
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._job: Rollout | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._stop = False
        self.result: tuple[dict[str, float], dict[str, torch.Tensor]] | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name='ppo-update', daemon=True)
        self._thread.start()

    def submit(self, rollout: Rollout) -> bool:
        """Hand over a rollout; False (and nothing queued) when an update is still running."""
        with self._lock:
            if not self._idle.is_set():
                return False
            self._job = rollout
            self._idle.clear()
            self._wake.notify()
            return True

    @property
    def busy(self) -> bool:
        return not self._idle.is_set()

    def wait_idle(self, timeout: float | None) -> bool:
        """Block until no update runs; False if one still runs after `timeout` seconds (None:
        as long as it takes)."""
        return self._idle.wait(timeout)

    def take_result(self):
        """The (stats, weights) of the last finished update, once; None if there is none."""
        with self._lock:
            result, self.result = self.result, None
            return result

    def _run(self) -> None:
        torch.set_num_threads(1)
        while True:
            with self._lock:
                while self._job is None and not self._stop:
                    self._wake.wait()
                if self._stop:
                    return
                job, self._job = self._job, None
            try:
                result = self._run_update(job)
                with self._lock:
                    self.result = result
            except Exception as error:  # reported by the agent; the next rollout tries again
                self.error = error
            finally:
                self._idle.set()

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stop = True
            self._wake.notify()
        self._thread.join(timeout)


class Agent:
    """Decides an action and a fovea centre per observation; fills rollouts; learns from them.

    The acting network is a copy of the learner's: an update trains the learner's copy in the
    worker, and the acting copy takes the new weights at its next decision. It acts for one
    stream of observations (a robot) or for several in lock-step (environments in training),
    each with its own share of the rollout.
    """

    def __init__(self, config: AgentConfig, streams: int = 1):
        if streams < 1 or config.rollout_length % streams:
            raise ValueError(f'rollout_length {config.rollout_length} must be a multiple of '
                             f'the number of streams ({streams})')
        self.config, self.streams = config, streams
        torch.manual_seed(config.seed)
        # Where a child process updates, the learner here only mirrors its state: on the CPU,
        # so that the acting process never sets up a GPU.
        self.learner = make_learner(replace(config, device='cpu') if config.update_process
                                    else config)
        self.policy = copy.deepcopy(self.learner.model).cpu()
        self.buffers = [RolloutBuffer(config.rollout_length // streams, config.model.feature_dim,
                                      self.policy.stored_action_dim) for _ in range(streams)]
        self._generator = torch.Generator().manual_seed(config.seed)
        self.feature_stats = RunningMeanStd((config.model.feature_dim,),
                                            horizon=config.feature_horizon)
        self.detail_stats = RunningMeanStd((1,), horizon=config.feature_horizon)
        """Standardise fovea detail for a saccadic focus head's context."""
        self._process = LearnerProcess(config, self.learner) if config.update_process else None
        self._worker = UpdateWorker(self._process.update if self._process else self._update_here)
        self._previous: list[tuple[np.ndarray, np.ndarray, Decision] | None] = [None] * streams
        self.steps = 0
        self.updates = 0
        self.updates_skipped = 0
        self.last_update: dict[str, float] = {}
        self.last_error: BaseException | None = None
        self.learning = True

    def act(self, features: np.ndarray, reward: float = 0.0, done: bool = False,
            fovea_detail: float = np.nan, centre: tuple[float, float] = (0.0, 0.0)) -> Decision:
        """Decide for `features`; `reward` and `done` belong to the previous decision;
        `fovea_detail` and `centre` (NaN: not known) as `act_batch`'s, for one stream."""
        return self.act_batch(np.asarray(features)[None], [reward], [done], [fovea_detail],
                              [centre])[0]

    def act_batch(self, features: np.ndarray, rewards, dones, fovea_detail=None,
                  centres=None) -> list[Decision]:
        """Decide for each stream's features [B, F]; rewards[i] and dones[i] belong to stream
        i's previous decision.

        :param fovea_detail: [B] or None: perception's `fovea_detail` of these features'
            frames, seen where the previous decisions' focus put the fovea. It is that focus's
            reward where `ppo.focus_reward` is 'detail' (not after an episode end, where the
            fovea starts afresh), and part of a saccadic focus head's context.
        :param centres: [B, 2] or None (the frame's centre): the fovea centres these
            features' frames were seen through, in [-1, 1].
        """
        streams = len(features)
        centres = (np.zeros((streams, 2)) if centres is None
                   else np.asarray(centres, np.float64).reshape(streams, 2))
        detail = (np.full(streams, np.nan) if fovea_detail is None
                  else np.asarray(fovea_detail, np.float64).reshape(streams))
        if self.learning and np.isfinite(detail).any():
            self.detail_stats.update(detail[np.isfinite(detail), None])
        context = np.concatenate(
            [centres, self.detail_stats.normalise(np.nan_to_num(detail)[:, None])], axis=1)
        self._adopt_finished_update()
        if self.learning:
            self.feature_stats.update(np.asarray(features, np.float64))
        # Perception's features vary little across inputs next to their fixed pattern (a
        # random encoder's per-dimension std across frames is about 0.08): standardised,
        # the policy sees the differences between frames.
        features = self.feature_stats.normalise(np.asarray(features, np.float64))
        if self.learning:
            clip = self.config.reward_clip
            for buffer, previous, next_features, reward, done, focus_reward in zip(
                    self.buffers, self._previous, features, rewards, dones, detail):
                if previous is not None:
                    prev_features, prev_context, d = previous
                    buffer.add(prev_features, next_features, d.action, d.log_prob, d.focus,
                               d.focus_log_prob, d.value_ext, d.value_int,
                               float(np.clip(reward, -clip, clip)), float(done),
                               np.nan if done else focus_reward, prev_context)
            if all(buffer.full for buffer in self.buffers):
                rollout = concatenate([buffer.take() for buffer in self.buffers])
                if self.config.wait_for_update:
                    self._worker.wait_idle(None)
                    self._adopt_finished_update()
                if not self._worker.submit(rollout):
                    self.updates_skipped += 1
        decisions = self.policy.decide(features, self._generator, context)
        self._previous = [(f.copy(), c.copy(), d)
                          for f, c, d in zip(features, context, decisions)]
        self.steps += len(decisions)
        return decisions

    def _update_here(self, rollout: Rollout):
        stats = self.learner.update(rollout)
        return stats, {k: v.detach().to('cpu', copy=True)
                       for k, v in self.learner.model.state_dict().items()}

    def sync_learner(self) -> None:
        """Bring `learner` up to date with the last finished update (it lags behind where the
        updates run in a child process)."""
        if self._process is not None:
            self._process.sync()

    def forget_previous(self) -> None:
        """Do not link the next observation to the last decision (inputs stopped, time jumped)."""
        self._previous = [None] * self.streams
        for buffer in self.buffers:
            buffer.mark_gap()

    @property
    def updating(self) -> bool:
        return self._worker.busy

    @property
    def update_process_restarts(self) -> int:
        """Update processes started again after one died (0 where updates run on a thread)."""
        return self._process.restarts if self._process is not None else 0

    def _adopt_finished_update(self) -> None:
        if self._worker.error is not None:
            self.last_error, self._worker.error = self._worker.error, None
        result = self._worker.take_result()
        if result is not None:
            self.last_update, weights = result
            self.policy.load_state_dict(weights)
            self.updates += 1

    def close(self) -> None:
        self._worker.stop()
        if self._process is not None:
            self._process.close()

    def architecture(self) -> dict:
        """What a checkpoint must match to be loaded into this agent."""
        model = asdict(self.config.model)
        if not model['saccadic_focus']:  # the absolute focus head of checkpoints from before
            del model['saccadic_focus']
        return {'model': model, 'curiosity': asdict(self.config.curiosity)}

    def save(self, directory: str | Path, keep: int = 3, timeout: float = 30.0) -> Path:
        """Write the learner's weights, optimizer state, normalisers, counters and generators.

        Waits up to `timeout` seconds for a running update, so that the weights and optimizer
        state belong together; an update still running then is abandoned (the learner goes
        back to its state from before it, and that rollout is lost) rather than let the
        checkpoint wait. RuntimeError if even that does not stop it (nothing is written).
        """
        if not self._worker.wait_idle(timeout):
            self.learner.abort.set()
            if self._process is not None:
                self._process.wake()  # a child starved of CPU must still see the abort
            try:
                if not self._worker.wait_idle(5.0):
                    raise RuntimeError('a PPO update could not be stopped for the checkpoint')
            finally:
                self.learner.abort.clear()
        self._adopt_finished_update()
        self.sync_learner()
        tensors, meta = self.learner.state()
        tensors.update(generator_tensors({'actions': self._generator}))
        meta.update(kind=CHECKPOINT_PREFIX, architecture=self.architecture(),
                    architecture_hash=config_hash(self.architecture()),
                    config=asdict(self.config), steps=self.steps, updates=self.updates,
                    updates_skipped=self.updates_skipped,
                    feature_stats=self.feature_stats.state(),
                    detail_stats=self.detail_stats.state())
        return save_checkpoint(directory, CHECKPOINT_PREFIX, self.steps, tensors, meta, keep)

    def load(self, checkpoint: LoadedCheckpoint) -> None:
        """Continue from a checkpoint; ValueError says precisely what does not match."""
        check_architecture(checkpoint, self.architecture())
        meta = checkpoint.metadata
        self.learner.load_state(checkpoint.tensors, meta)
        self.learner.set_learning_rates()  # the configured rates, not the saved ones
        self.learner.last_good.snapshot()  # with those rates
        if self._process is not None:
            self._process.invalidate()
        self.policy.load_state_dict(self.learner.model.state_dict())
        self.steps, self.updates = int(meta['steps']), int(meta['updates'])
        self.updates_skipped = int(meta.get('updates_skipped', 0))  # absent from older ones
        restore_generators(checkpoint.tensors, {'actions': self._generator})
        self.feature_stats.load_state(meta['feature_stats'])
        if 'detail_stats' in meta:  # absent from older checkpoints
            self.detail_stats.load_state(meta['detail_stats'])
        self.forget_previous()
