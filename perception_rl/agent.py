"""The agent core: acts on every feature vector, learns in a background worker."""
import copy
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from perception_rl.actor_critic import ActorCritic, ActorCriticConfig, Decision
from perception_rl.checkpoint import (LoadedCheckpoint, check_architecture, config_hash,
                                      restore_state, save_checkpoint, state_tensors)
from perception_rl.curiosity import ICM, ICMConfig
from perception_rl.ppo import PPOConfig, PPOLearner
from perception_rl.rollout import Rollout, RolloutBuffer

CHECKPOINT_PREFIX = 'agent'


@dataclass
class AgentConfig:
    """Everything that defines an agent."""

    model: ActorCriticConfig = field(default_factory=ActorCriticConfig)
    icm: ICMConfig = field(default_factory=ICMConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    rollout_length: int = 256
    """Transitions per PPO update (256 steps are 12.8 s at 20 Hz)."""
    reward_clip: float = 10.0
    """Extrinsic rewards are clipped to [-reward_clip, reward_clip]."""
    seed: int = 0
    """Seed of the initial weights and of the action sampling."""


class UpdateWorker:
    """Runs learner updates on a thread of its own, one at a time, so acting never waits."""

    def __init__(self, learner: PPOLearner):
        self._learner = learner
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

    def wait_idle(self, timeout: float) -> bool:
        """Block until no update runs; False if one still runs after `timeout` seconds."""
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
                stats = self._learner.update(job)
                weights = {k: v.detach().clone() for k, v in
                           self._learner.model.state_dict().items()}
                with self._lock:
                    self.result = (stats, weights)
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
    worker, and the acting copy takes the new weights at its next decision.
    """

    def __init__(self, config: AgentConfig):
        self.config = config
        torch.manual_seed(config.seed)
        mc = config.model
        self.policy = ActorCritic(mc)
        icm = ICM(mc.feature_dim, mc.action_dim, config.icm)
        self.learner = PPOLearner(copy.deepcopy(self.policy), icm, config.ppo, config.seed)
        self.buffer = RolloutBuffer(config.rollout_length, mc.feature_dim, mc.action_dim)
        self._generator = torch.Generator().manual_seed(config.seed)
        self._worker = UpdateWorker(self.learner)
        self._previous: tuple[np.ndarray, Decision] | None = None
        self.steps = 0
        self.updates = 0
        self.updates_skipped = 0
        self.last_update: dict[str, float] = {}
        self.last_error: BaseException | None = None
        self.learning = True

    def act(self, features: np.ndarray, reward: float = 0.0, done: bool = False) -> Decision:
        """Decide for `features`; `reward` and `done` belong to the previous decision."""
        self._adopt_finished_update()
        if self._previous is not None and self.learning:
            prev_features, d = self._previous
            reward = float(np.clip(reward, -self.config.reward_clip, self.config.reward_clip))
            self.buffer.add(prev_features, features, d.action, d.log_prob, d.focus,
                            d.focus_log_prob, d.value_ext, d.value_int, reward, float(done))
            if self.buffer.full:
                rollout = self.buffer.take()
                if not self._worker.submit(rollout):
                    self.updates_skipped += 1
        decision = self.policy.decide(features, self._generator)
        self._previous = (np.array(features, np.float32), decision)
        self.steps += 1
        return decision

    def forget_previous(self) -> None:
        """Do not link the next observation to the last decision (inputs stopped, time jumped)."""
        self._previous = None
        self.buffer.mark_gap()

    @property
    def updating(self) -> bool:
        return self._worker.busy

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

    def architecture(self) -> dict:
        """What a checkpoint must match to be loaded into this agent."""
        return {'model': asdict(self.config.model), 'icm': asdict(self.config.icm)}

    def _parts(self):
        return ({'policy': self.learner.model, 'icm': self.learner.icm},
                {'adam': self.learner.optimizer})

    def save(self, directory: str | Path, keep: int = 3, timeout: float = 30.0) -> Path:
        """Write the learner's weights, optimizer state, normaliser and counters.

        Waits for a running update first, so the weights and optimizer state belong together;
        RuntimeError if it is still running after `timeout` seconds (nothing is written).
        """
        if not self._worker.wait_idle(timeout):
            raise RuntimeError(f'a PPO update is still running after {timeout} s')
        self._adopt_finished_update()
        tensors, meta = state_tensors(*self._parts())
        stats = self.learner.intrinsic_stats
        meta.update(kind=CHECKPOINT_PREFIX, architecture=self.architecture(),
                    architecture_hash=config_hash(self.architecture()),
                    config=asdict(self.config), steps=self.steps, updates=self.updates,
                    intrinsic_stats=[stats.mean.tolist(), stats.var.tolist(), stats.count])
        return save_checkpoint(directory, CHECKPOINT_PREFIX, self.steps, tensors, meta, keep)

    def load(self, checkpoint: LoadedCheckpoint) -> None:
        """Continue from a checkpoint; ValueError says precisely what does not match."""
        check_architecture(checkpoint, self.architecture())
        restore_state(checkpoint.tensors, checkpoint.metadata, *self._parts())
        for group in self.learner.optimizer.param_groups:  # the configured rate, not the saved
            group['lr'] = self.config.ppo.learning_rate
        self.policy.load_state_dict(self.learner.model.state_dict())
        meta = checkpoint.metadata
        self.steps, self.updates = int(meta['steps']), int(meta['updates'])
        stats = self.learner.intrinsic_stats
        mean, var, count = meta['intrinsic_stats']
        stats.mean, stats.var, stats.count = np.array(mean), np.array(var), float(count)
        self.forget_previous()
