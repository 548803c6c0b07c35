"""The agent's networks: actor (Gaussian or categorical), critic with extrinsic and intrinsic
heads, focus head."""
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Normal
from torch.nn import functional as F


@dataclass
class ActorCriticConfig:
    """Sizes of the actor, critic and focus head."""

    feature_dim: int = 64
    """Size of the perception features the agent acts on."""
    action_dim: int = 2
    """How many command components the actor controls, or with `discrete` how many actions
    it chooses among."""
    discrete: bool = False
    """A categorical actor choosing one of `action_dim` actions, instead of a Gaussian one."""
    hidden: int = 64
    """Hidden width of each MLP."""
    init_log_std: float = -0.5
    """Initial log standard deviation of the action and focus distributions."""
    saccadic_focus: bool = False
    """The focus head also sees where the fovea is now and how much detail it sees there
    (`focus_context`), and proposes a move from there with a spread of its own per state: it
    can hold the fovea on what it found and search widely where it found nothing. Otherwise
    it proposes an absolute centre from the features, with one spread for all states."""


FOCUS_CONTEXT = 3
"""What a saccadic focus head knows of the fovea besides the features: the centre (x, y in
[-1, 1]) the features were seen through and the detail the fovea sees there (standardised)."""
CENTRE_LIMIT = 0.95
"""A saccadic move starts from the fovea centre clipped to this, so an edge is no trap."""
FOCUS_LOG_STD_RANGE = (-3.0, 1.0)
"""Bounds of a saccadic focus head's log spread: from a twentieth of the frame's half-width
to wider than the frame."""


@dataclass
class Decision:
    """What the agent chose for one observation (raw, before any clipping)."""

    action: np.ndarray        # [A], or [1] holding the index of a discrete action
    log_prob: float
    focus: np.ndarray         # [2] fovea centre in [-1, 1] frame coordinates (before clipping)
    focus_log_prob: float
    value_ext: float
    value_int: float


def mlp(inputs: int, hidden: int, outputs: int, out_gain: float) -> nn.Sequential:
    """Two tanh hidden layers, orthogonal init (the PPO implementation details, Huang et al. 2022)."""
    layers = [nn.Linear(inputs, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
              nn.Linear(hidden, outputs)]
    for layer in layers:
        if isinstance(layer, nn.Linear):
            nn.init.orthogonal_(layer.weight, gain=np.sqrt(2))
            nn.init.zeros_(layer.bias)
    nn.init.orthogonal_(layers[-1].weight, gain=out_gain)
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """Actor, focus head and two critics (extrinsic and intrinsic returns), each its own MLP
    on the features: the intrinsic return's scale can differ from the extrinsic one's by orders
    of magnitude, and a shared trunk would learn mostly the larger."""

    def __init__(self, config: ActorCriticConfig):
        super().__init__()
        self.config = config
        c = config
        self.actor = mlp(c.feature_dim, c.hidden, c.action_dim, out_gain=0.01)
        if not c.discrete:
            self.actor_log_std = nn.Parameter(torch.full((c.action_dim,), c.init_log_std))
        self.focus = (mlp(c.feature_dim + FOCUS_CONTEXT, c.hidden, 4, out_gain=0.01)
                      if c.saccadic_focus else mlp(c.feature_dim, c.hidden, 2, out_gain=0.01))
        self.focus_log_std = nn.Parameter(torch.full((2,), c.init_log_std))
        self.critic_ext = mlp(c.feature_dim, c.hidden, 1, out_gain=1.0)
        self.critic_int = mlp(c.feature_dim, c.hidden, 1, out_gain=1.0)

    @property
    def stored_action_dim(self) -> int:
        """Floats per stored action: the components, or 1 for a discrete action's index."""
        return 1 if self.config.discrete else self.config.action_dim

    def policy(self, features: torch.Tensor) -> Normal | Categorical:
        if self.config.discrete:
            return Categorical(logits=self.actor(features))
        return Normal(self.actor(features), self.actor_log_std.exp())

    def evaluate(self, features: torch.Tensor, actions: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probability [B], entropy [B]) of stored actions [B, stored_action_dim]."""
        policy = self.policy(features)
        if self.config.discrete:
            return policy.log_prob(actions[:, 0].long()), policy.entropy()
        return policy.log_prob(actions).sum(dim=1), policy.entropy().sum(dim=1)

    def executed(self, actions: torch.Tensor) -> torch.Tensor:
        """Stored actions as the environment received them, as vectors [B, action_dim]: the
        components clipped to [-1, 1], or a discrete action one-hot."""
        if self.config.discrete:
            return F.one_hot(actions[:, 0].long(), self.config.action_dim).float()
        return actions.clamp(-1.0, 1.0)

    def focus_parameters(self) -> list[nn.Parameter]:
        return [*self.focus.parameters(), self.focus_log_std]

    def focus_policy(self, features: torch.Tensor, context: torch.Tensor) -> Normal:
        """The distribution of the next fovea centre, given the features [B, F] and the
        fovea's context [B, FOCUS_CONTEXT] (used by a saccadic head only)."""
        mean, log_std = self._focus_mean_log_std(features, context)
        return Normal(mean, log_std.exp())

    def _focus_mean_log_std(self, features: torch.Tensor, context: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.config.saccadic_focus:
            return self.focus(features), self.focus_log_std.expand(len(features), 2)
        out = self.focus(torch.cat([features, context], dim=1))
        log_std = (self.focus_log_std + out[:, 2:]).clamp(*FOCUS_LOG_STD_RANGE)
        # The move is made in tanh's inverse: the mean stays inside the frame, and a head
        # pushed towards an edge can come back (a clipped mean would hold it there for good).
        here = torch.atanh(context[:, :2].clamp(-CENTRE_LIMIT, CENTRE_LIMIT))
        return torch.tanh(here + out[:, :2]), log_std

    def values(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(V_ext, V_int), each [B]."""
        return self.critic_ext(features)[:, 0], self.critic_int(features)[:, 0]

    @torch.no_grad()
    def decide(self, features: np.ndarray, generator: torch.Generator,
               context: np.ndarray | None = None) -> list[Decision]:
        """Sample an action and a fovea centre for each feature vector of [B, F], with the
        fovea's context [B, FOCUS_CONTEXT] (None: zeros, the fovea at the frame's centre).

        The same draws and log-probabilities as `policy`/`focus_policy` would give, in plain
        tensor arithmetic: on the acting path every torch call may wait for the GIL while a
        PPO update runs on its thread, and torch.distributions makes many
        (docs/realtime_benchmark.md).
        """
        f = torch.as_tensor(features, dtype=torch.float32).reshape(-1, self.config.feature_dim)
        if self.config.discrete:
            logits = self.actor(f)
            action = torch.multinomial(torch.softmax(logits, dim=1), 1, generator=generator)
            log_prob = torch.log_softmax(logits, dim=1).gather(1, action)[:, 0]
            action = action.float()
        else:
            mean = self.actor(f)
            action = mean + self.actor_log_std.exp() * torch.randn(mean.shape,
                                                                   generator=generator)
            log_prob = _gaussian_log_prob(action, mean, self.actor_log_std)
        context = (torch.zeros(len(f), FOCUS_CONTEXT) if context is None else
                   torch.as_tensor(context, dtype=torch.float32).reshape(len(f), FOCUS_CONTEXT))
        focus_mean, focus_log_std = self._focus_mean_log_std(f, context)
        focus = focus_mean + focus_log_std.exp() * torch.randn(focus_mean.shape,
                                                               generator=generator)
        focus_log_prob = _gaussian_log_prob(focus, focus_mean, focus_log_std)
        value_ext, value_int = self.values(f)
        return [Decision(action=action[i].numpy(), log_prob=float(log_prob[i]),
                         focus=focus[i].numpy(), focus_log_prob=float(focus_log_prob[i]),
                         value_ext=float(value_ext[i]), value_int=float(value_int[i]))
                for i in range(len(f))]


def _gaussian_log_prob(value: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor
                       ) -> torch.Tensor:
    """log N(value; mean, exp(log_std)^2), summed over the last dimension: [B]."""
    return (-0.5 * ((value - mean) * torch.exp(-log_std)) ** 2 - log_std
            - 0.5 * math.log(2 * math.pi)).sum(dim=1)
