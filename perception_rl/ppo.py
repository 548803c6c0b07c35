"""PPO with curiosity and the focus head's REINFORCE, on one finished rollout at a time."""
import threading
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from perception_rl.actor_critic import ActorCritic
from perception_rl.checkpoint import restore_state, state_tensors
from perception_rl.last_good import LastGood, all_finite
from perception_rl.rollout import Rollout, compute_gae, discounted_returns
from perception_rl.running_stats import RunningMeanStd


@dataclass
class PPOConfig:
    """PPO hyperparameters (defaults after Schulman et al. 2017 and CleanRL's continuous PPO)."""

    learning_rate: float = 3e-4
    """Adam learning rate of actor, critic, focus head and curiosity module."""
    epochs: int = 4
    """Passes over each rollout."""
    minibatch_size: int = 64
    """Transitions per gradient step."""
    clip: float = 0.2
    """Clipping range of the probability ratio."""
    gamma_ext: float = 0.99
    """Discount of extrinsic rewards."""
    gamma_int: float = 0.99
    """Discount of intrinsic rewards (non-episodic, as in RND)."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    entropy_coef: float = 0.0
    """Entropy bonus weight (CleanRL's default: 0 for continuous actions, 0.01 for discrete)."""
    value_coef: float = 0.5
    """Weight of the value losses."""
    max_grad_norm: float = 0.5
    """Global gradient norm clip."""
    target_kl: float = 0.03
    """Stop the epochs early when the approximate KL to the behaviour policy exceeds this."""
    ext_coef: float = 1.0
    """Weight of the extrinsic advantage in the combined advantage."""
    int_coef: float = 0.5
    """Weight of the intrinsic advantage in the combined advantage."""
    focus_coef: float = 1.0
    """Weight of the focus head's REINFORCE loss."""
    focus_reward: str = 'task'
    """What the focus head learns from. 'task': the combined advantage of the step, one
    REINFORCE pass over the rollout. 'detail': the fovea detail of the view the focus chose
    (perception's `fovea_detail` of the next frame), less its rollout mean, over its running
    std; PPO's clipped objective over `epochs` passes, as it is the focus head's own reward."""
    focus_learning_rate: float | None = None
    """Adam learning rate of the focus head; None: `learning_rate`."""
    curiosity_coef: float = 1.0
    """Weight of the curiosity module's loss."""
    extrinsic_scale_floor: float = 1.0
    """Extrinsic rewards are divided by the running std of their discounted return where that
    exceeds this floor: a reward scale of hundreds cannot blow up the critic, while sparse
    rewards of order one are left as they are (a std estimated from the few rewards seen early
    would multiply them by thousands)."""
    nonfinite_patience: int = 10
    """Gradient steps skipped for a non-finite loss or gradient, in a row, after which the
    update is abandoned and the weights from before it restored."""


FOCUS_REWARDS = ('task', 'detail')
FOCUS_REWARD_HORIZON = 100_000
"""Focus rewards over which the running std that scales them is taken."""


class UpdateAbandoned(RuntimeError):
    """An update stopped part-way; the learner is back at its state from before it."""


class PPOLearner:
    """Owns the learning copies of the networks and their optimizer; `update` trains on a rollout."""

    def __init__(self, model: ActorCritic, curiosity: nn.Module, config: PPOConfig,
                 seed: int = 0, device: torch.device = torch.device('cpu')):
        if config.focus_reward not in FOCUS_REWARDS:
            raise ValueError(f"'focus_reward' must be one of {FOCUS_REWARDS}, not "
                             f'{config.focus_reward!r}')
        self.device = device
        self.model, self.curiosity, self.config = model.to(device), curiosity.to(device), config
        self.optimizer = torch.optim.Adam(
            self._parameter_groups(), lr=config.learning_rate,
            eps=1e-5, fused=True)  # one kernel for all parameters: a shorter update
        self.intrinsic_stats = RunningMeanStd()
        self.extrinsic_stats = RunningMeanStd()
        self.focus_reward_stats = RunningMeanStd(horizon=FOCUS_REWARD_HORIZON)
        self.rng = np.random.default_rng(seed)
        """Shuffles the minibatches."""
        self.last_good = LastGood([model, curiosity], self.optimizer, config.nonfinite_patience)
        self._good_stats = self.reward_stats()
        self.abort = threading.Event()
        """Set from another thread to stop a running update (at shutdown, for the checkpoint)."""

    def update(self, rollout: Rollout) -> dict[str, float]:
        """One PPO + curiosity + focus update; returns the losses and diagnostics.

        A non-finite loss or gradient skips that gradient step; `nonfinite_patience` of them in
        a row, non-finite intrinsic rewards or weights, or `abort` abandon the update: the
        weights, optimizer and reward statistics go back to their state from before it, and
        UpdateAbandoned says why.
        """
        if self.last_good.snapshot():
            self._good_stats = self.reward_stats()
        try:
            stats = self._update(rollout)
            if not all_finite([self.model, self.curiosity]):
                raise UpdateAbandoned('non-finite weights after the update; weights restored '
                                      'from before it')
            return stats
        except UpdateAbandoned:
            self.last_good.restore(counted=not self.abort.is_set())
            self.load_reward_stats(self._good_stats)
            raise

    def _parameter_groups(self) -> list[dict]:
        """One group at the learning rate; the focus head in a second group where its rate
        differs (one group otherwise, as in checkpoints written before the focus had a rate
        of its own)."""
        c = self.config
        every = [*self.model.parameters(), *self.curiosity.parameters()]
        if c.focus_learning_rate in (None, c.learning_rate):
            return [{'params': every}]
        focus = {id(p) for p in self.model.focus_parameters()}
        return [{'params': [p for p in every if id(p) not in focus]},
                {'params': self.model.focus_parameters(), 'lr': c.focus_learning_rate}]

    def set_learning_rates(self) -> None:
        """The configured learning rates (after loading an optimizer's saved state)."""
        c = self.config
        rates = [c.learning_rate, c.focus_learning_rate or c.learning_rate]
        for group, rate in zip(self.optimizer.param_groups, rates):
            group['lr'] = rate

    def _scaled_focus_rewards(self, rewards: np.ndarray) -> np.ndarray:
        """Focus rewards less their mean over the rollout, over their running std (not the
        rollout's: a focus that finds nothing anywhere must not see its noise magnified);
        0 where there is none (NaN)."""
        out = np.zeros(len(rewards), np.float32)
        finite = np.isfinite(rewards)
        if finite.sum() > 1:
            self.focus_reward_stats.update(rewards[finite, None].astype(np.float64))
            out[finite] = ((rewards[finite] - rewards[finite].mean())
                           / (float(self.focus_reward_stats.std[0]) + 1e-8))
        return out

    def extrinsic_scale(self) -> float:
        """What extrinsic rewards are divided by: their return's running std, at least the
        floor."""
        return max(float(self.extrinsic_stats.std[0]), self.config.extrinsic_scale_floor)

    def reward_stats(self) -> dict[str, list]:
        """The running statistics that scale the rewards, for a checkpoint."""
        return {'intrinsic': self.intrinsic_stats.state(),
                'extrinsic': self.extrinsic_stats.state(),
                'focus': self.focus_reward_stats.state()}

    def load_reward_stats(self, stats: dict[str, list]) -> None:
        self.intrinsic_stats.load_state(stats['intrinsic'])
        if 'extrinsic' in stats:  # absent from older checkpoints
            self.extrinsic_stats.load_state(stats['extrinsic'])
        if 'focus' in stats:
            self.focus_reward_stats.load_state(stats['focus'])

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Everything an update changes, as (CPU tensors, json-able metadata): weights,
        optimizer state, reward statistics, the shuffling generator and the counters."""
        tensors, meta = state_tensors({'policy': self.model, 'curiosity': self.curiosity},
                                      {'adam': self.optimizer})
        meta.update(ppo_rng=self.rng.bit_generator.state, reward_stats=self.reward_stats(),
                    nonfinite_steps_skipped=self.last_good.skipped,
                    restores=self.last_good.restores)
        return tensors, meta

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Take over what `state` wrote (a checkpoint's metadata from before the generator,
        counters or extrinsic statistics were kept loads too); ValueError names a mismatch."""
        restore_state(tensors, meta, {'policy': self.model, 'curiosity': self.curiosity},
                      {'adam': self.optimizer})
        if 'ppo_rng' in meta:
            self.rng.bit_generator.state = meta['ppo_rng']
        self.load_reward_stats(meta['reward_stats'] if 'reward_stats' in meta
                               else {'intrinsic': meta['intrinsic_stats']})
        self.last_good.skipped = int(meta.get('nonfinite_steps_skipped', 0))
        self.last_good.restores = int(meta.get('restores', 0))
        self.last_good.snapshot()
        self._good_stats = self.reward_stats()

    def _step(self, loss: torch.Tensor, parameters: list[torch.Tensor]) -> None:
        """Backward, clip and step, unless the loss or the gradient is not finite."""
        if self.abort.is_set():
            raise UpdateAbandoned('stopped from outside')
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = nn.utils.clip_grad_norm_(parameters, self.config.max_grad_norm)
        if not (torch.isfinite(loss) and torch.isfinite(norm)):
            if self.last_good.failed():
                raise UpdateAbandoned(f'{self.last_good.in_a_row} non-finite gradient steps in '
                                      'a row; weights restored from before the update')
            return
        self.optimizer.step()
        self.last_good.succeeded()

    def _update(self, rollout: Rollout) -> dict[str, float]:
        c, device = self.config, self.device
        f = torch.as_tensor(rollout.features, device=device)
        nf = torch.as_tensor(rollout.next_features, device=device)
        actions = torch.as_tensor(rollout.actions, device=device)
        executed = self.model.executed(actions)  # what the robot or environment received
        old_log_probs = torch.as_tensor(rollout.log_probs, device=device)
        focus = torch.as_tensor(rollout.focus, device=device)
        focus_context = torch.as_tensor(rollout.focus_context, device=device)

        # Intrinsic rewards from the curiosity module as it stood when the rollout finished,
        # divided by the running std of their discounted return (Burda et al. 2018, RND), so
        # that the intrinsic return stays of order one whatever the features' scale.
        raw_intrinsic = self.curiosity.intrinsic_reward(f, executed, nf).cpu().numpy()
        if not np.isfinite(raw_intrinsic).all():
            raise UpdateAbandoned('non-finite intrinsic rewards; weights restored from before '
                                  'the update')
        self.intrinsic_stats.update(
            discounted_returns(raw_intrinsic, rollout.gaps, c.gamma_int)[:, None])
        intrinsic = raw_intrinsic / float(self.intrinsic_stats.std[0])
        cuts = np.maximum(rollout.dones, rollout.gaps)
        self.extrinsic_stats.update(
            discounted_returns(rollout.rewards_ext, cuts, c.gamma_ext)[:, None])
        extrinsic = (rollout.rewards_ext / self.extrinsic_scale()).astype(np.float32)

        # V(s_{t+1}): the stored value of the next row where it follows on, the critic's
        # value of the stored next observation where the stream broke (or the rollout ends).
        with torch.no_grad():
            gap_ext, gap_int = (v.cpu().numpy() for v in self.model.values(nf))
        gaps = rollout.gaps > 0
        next_ext = np.where(gaps, gap_ext, np.append(rollout.values_ext[1:], 0.0))
        next_int = np.where(gaps, gap_int, np.append(rollout.values_int[1:], 0.0))
        adv_ext, ret_ext = compute_gae(extrinsic, rollout.values_ext, next_ext,
                                       rollout.dones, cuts, c.gamma_ext, c.gae_lambda)
        no_dones = np.zeros_like(rollout.dones)  # curiosity does not stop at episode ends
        adv_int, ret_int = compute_gae(intrinsic.astype(np.float32), rollout.values_int,
                                       next_int, no_dones, rollout.gaps, c.gamma_int,
                                       c.gae_lambda)
        advantages = torch.as_tensor(c.ext_coef * adv_ext + c.int_coef * adv_int, device=device)
        ret_ext = torch.as_tensor(ret_ext, device=device)
        ret_int = torch.as_tensor(ret_int, device=device)

        # Focus head: REINFORCE on the stored trajectory (the seed design: the ROI head learns
        # from its own loss). On the task advantage: one pass over the rollout in minibatches,
        # so that each sample is used once, while its policy is still the one that chose it.
        # On fovea detail, its own reward: PPO's clipped passes, as for the actor.
        steps = len(rollout.rewards_ext)
        if c.focus_reward == 'detail':
            focus_adv = torch.as_tensor(self._scaled_focus_rewards(rollout.focus_rewards),
                                        device=device)
            focus_epochs = c.epochs
        else:
            focus_adv = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
            focus_epochs = 1
        old_focus_log_probs = torch.as_tensor(rollout.focus_log_probs, device=device)
        focus_losses = []
        for _ in range(focus_epochs):
            for idx in np.array_split(self.rng.permutation(steps),
                                      max(1, steps // c.minibatch_size)):
                idx = torch.as_tensor(idx, device=device)
                focus_log_probs = self.model.focus_policy(f[idx], focus_context[idx]).log_prob(
                    focus[idx]).sum(dim=1)
                if focus_epochs == 1:
                    focus_loss = -(focus_log_probs * focus_adv[idx]).mean()
                else:
                    ratio = (focus_log_probs - old_focus_log_probs[idx]).exp()
                    focus_loss = torch.max(-focus_adv[idx] * ratio, -focus_adv[idx]
                                           * ratio.clamp(1 - c.clip, 1 + c.clip)).mean()
                self._step(c.focus_coef * focus_loss, self.model.focus_parameters())
                focus_losses.append(focus_loss.item())

        stats = {'focus_loss': float(np.mean(focus_losses)),
                 'focus_reward': float(np.nanmean(rollout.focus_rewards))
                 if np.isfinite(rollout.focus_rewards).any() else 0.0}
        epochs_run = 0
        for _ in range(c.epochs):
            epochs_run += 1
            kls = []
            for idx in np.array_split(self.rng.permutation(steps),
                                      max(1, steps // c.minibatch_size)):
                idx = torch.as_tensor(idx, device=device)
                log_probs, entropies = self.model.evaluate(f[idx], actions[idx])
                log_ratio = log_probs - old_log_probs[idx]
                ratio = log_ratio.exp()
                mb_adv = advantages[idx]
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)

                # Policy loss: the clipped surrogate objective.
                policy_loss = torch.max(
                    -mb_adv * ratio, -mb_adv * ratio.clamp(1 - c.clip, 1 + c.clip)).mean()
                # Value loss: one head per reward stream.
                v_ext, v_int = self.model.values(f[idx])
                value_loss = 0.5 * ((v_ext - ret_ext[idx]).pow(2).mean()
                                    + (v_int - ret_int[idx]).pow(2).mean())
                # Entropy bonus.
                entropy = entropies.mean()
                # Curiosity.
                curiosity_loss, curiosity_terms = self.curiosity.loss(
                    f[idx], executed[idx], nf[idx])

                loss = (policy_loss + c.value_coef * value_loss - c.entropy_coef * entropy
                        + c.curiosity_coef * curiosity_loss)
                # Gradient clipping, and no step on a non-finite loss or gradient.
                self._step(loss, self.optimizer.param_groups[0]['params'])
                with torch.no_grad():  # approximate KL, Schulman's k3 estimator
                    kls.append(float(((ratio - 1) - log_ratio).mean()))
            # KL early stop.
            if np.mean(kls) > c.target_kl:
                break
        stats.update(policy_loss=policy_loss.item(), value_loss=value_loss.item(),
                     entropy=entropy.item(), approx_kl=float(np.mean(kls)),
                     epochs=float(epochs_run), intrinsic_reward=float(intrinsic.mean()),
                     extrinsic_reward=float(rollout.rewards_ext.mean()), **curiosity_terms)
        return stats
