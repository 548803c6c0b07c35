"""The rollout buffer the agent fills while acting, and generalised advantage estimation."""
from dataclasses import dataclass, fields

import numpy as np

from perception_rl.actor_critic import FOCUS_CONTEXT


def compute_gae(rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray,
                dones: np.ndarray, cuts: np.ndarray, gamma: float, lam: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and returns by GAE (Schulman et al. 2016).

    :param rewards: r_t [T]
    :param values: V(s_t) [T]
    :param next_values: V(s_{t+1}) [T], the state reached after step t
    :param dones: 1.0 where the episode ended after step t: no bootstrap [T]
    :param cuts: 1.0 where row t+1 does not continue row t (an episode end, or a gap in the
        stream): the lambda-trace stops there [T]
    :returns: (advantages [T], returns [T] = advantages + values)
    """
    steps = len(rewards)
    advantages = np.zeros(steps, np.float32)
    next_advantage = 0.0
    for t in reversed(range(steps)):
        delta = rewards[t] + gamma * next_values[t] * (1.0 - dones[t]) - values[t]
        next_advantage = delta + gamma * lam * (1.0 - cuts[t]) * next_advantage
        advantages[t] = next_advantage
    return advantages, advantages + values.astype(np.float32)


def discounted_returns(rewards: np.ndarray, cuts: np.ndarray, gamma: float) -> np.ndarray:
    """The discounted sum of rewards so far at each step, restarting after each cut (RND's
    reward forward filter, whose spread scales the intrinsic reward)."""
    returns = np.zeros(len(rewards), np.float64)
    running = 0.0
    for t, reward in enumerate(rewards):
        running = gamma * running + reward
        returns[t] = running
        if cuts[t]:
            running = 0.0
    return returns


@dataclass
class Rollout:
    """A finished rollout of T steps, handed whole to the learner."""

    features: np.ndarray       # [T, F] what the agent saw
    next_features: np.ndarray  # [T, F] what it saw after acting (for curiosity)
    actions: np.ndarray        # [T, A] raw (unclipped) actions
    log_probs: np.ndarray      # [T] log-probability of the actions when taken
    focus: np.ndarray          # [T, 2] raw fovea centres chosen
    focus_log_probs: np.ndarray  # [T]
    values_ext: np.ndarray     # [T]
    values_int: np.ndarray     # [T]
    rewards_ext: np.ndarray    # [T]
    dones: np.ndarray          # [T]
    gaps: np.ndarray           # [T] 1.0 where row t+1 does not follow row t in time
    focus_rewards: np.ndarray  # [T] the fovea detail of frame t+1, seen where the focus
    #                            chosen at t put the fovea; NaN where there is none
    focus_context: np.ndarray  # [T, 3] the fovea's centre and detail when the focus was chosen


def concatenate(rollouts: list[Rollout]) -> Rollout:
    """One rollout of several streams' rollouts, one after the other. Each ends in a gap, so
    no advantage runs from one stream's last step into the next stream's first."""
    return Rollout(**{f.name: np.concatenate([getattr(r, f.name) for r in rollouts])
                      for f in fields(Rollout)})


class RolloutBuffer:
    """Fixed-size storage of transitions; `add` until `full`, then `take` a Rollout."""

    def __init__(self, length: int, feature_dim: int, action_dim: int):
        self.length = length
        self._f = np.zeros((length, feature_dim), np.float32)
        self._nf = np.zeros((length, feature_dim), np.float32)
        self._a = np.zeros((length, action_dim), np.float32)
        self._lp = np.zeros(length, np.float32)
        self._focus = np.zeros((length, 2), np.float32)
        self._flp = np.zeros(length, np.float32)
        self._ve = np.zeros(length, np.float32)
        self._vi = np.zeros(length, np.float32)
        self._r = np.zeros(length, np.float32)
        self._d = np.zeros(length, np.float32)
        self._gap = np.zeros(length, np.float32)
        self._fr = np.full(length, np.nan, np.float32)
        self._context = np.zeros((length, FOCUS_CONTEXT), np.float32)
        self.size = 0

    @property
    def full(self) -> bool:
        return self.size == self.length

    def add(self, features, next_features, action, log_prob, focus, focus_log_prob,
            value_ext, value_int, reward_ext, done, focus_reward=np.nan, focus_context=0.0
            ) -> None:
        """Store one finished transition (focus_reward: NaN where there is none)."""
        i = self.size
        self._f[i], self._nf[i], self._a[i], self._lp[i] = features, next_features, action, log_prob
        self._focus[i], self._flp[i] = focus, focus_log_prob
        self._ve[i], self._vi[i], self._r[i], self._d[i] = value_ext, value_int, reward_ext, done
        self._gap[i], self._fr[i], self._context[i] = 0.0, focus_reward, focus_context
        self.size += 1

    def mark_gap(self) -> None:
        """The stream broke after the last stored row: the next row does not follow it."""
        if self.size:
            self._gap[self.size - 1] = 1.0

    def take(self) -> Rollout:
        """Copy out the full buffer and empty it."""
        if not self.full:
            raise RuntimeError('the rollout buffer is not full yet')
        self.size = 0
        gaps = self._gap.copy()
        gaps[-1] = 1.0  # what follows the rollout is not in it
        return Rollout(self._f.copy(), self._nf.copy(), self._a.copy(), self._lp.copy(),
                       self._focus.copy(), self._flp.copy(), self._ve.copy(), self._vi.copy(),
                       self._r.copy(), self._d.copy(), gaps, self._fr.copy(),
                       self._context.copy())
