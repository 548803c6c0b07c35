"""The agent's networks: Gaussian actor, critic with extrinsic and intrinsic heads, focus head."""
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.distributions import Normal


@dataclass
class ActorCriticConfig:
    """Sizes of the actor, critic and focus head."""

    feature_dim: int = 64
    """Size of the perception features the agent acts on."""
    action_dim: int = 2
    """How many command components the actor controls."""
    hidden: int = 64
    """Hidden width of each MLP."""
    init_log_std: float = -0.5
    """Initial log standard deviation of the action and focus distributions."""


@dataclass
class Decision:
    """What the agent chose for one observation (raw, before any clipping)."""

    action: np.ndarray        # [A]
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
    """Actor, focus head and a two-headed critic, each its own MLP on the features."""

    def __init__(self, config: ActorCriticConfig):
        super().__init__()
        self.config = config
        c = config
        self.actor = mlp(c.feature_dim, c.hidden, c.action_dim, out_gain=0.01)
        self.actor_log_std = nn.Parameter(torch.full((c.action_dim,), c.init_log_std))
        self.focus = mlp(c.feature_dim, c.hidden, 2, out_gain=0.01)
        self.focus_log_std = nn.Parameter(torch.full((2,), c.init_log_std))
        self.critic = mlp(c.feature_dim, c.hidden, 2, out_gain=1.0)  # [extrinsic, intrinsic]

    def policy(self, features: torch.Tensor) -> Normal:
        return Normal(self.actor(features), self.actor_log_std.exp())

    def focus_policy(self, features: torch.Tensor) -> Normal:
        return Normal(self.focus(features), self.focus_log_std.exp())

    def values(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(V_ext, V_int), each [B]."""
        values = self.critic(features)
        return values[:, 0], values[:, 1]

    @torch.no_grad()
    def decide(self, features: np.ndarray, generator: torch.Generator) -> Decision:
        """Sample an action and a fovea centre for one feature vector."""
        f = torch.as_tensor(features, dtype=torch.float32).reshape(1, -1)
        policy, focus_policy = self.policy(f), self.focus_policy(f)
        action = policy.mean + policy.stddev * torch.randn(
            policy.mean.shape, generator=generator)
        focus = focus_policy.mean + focus_policy.stddev * torch.randn(
            focus_policy.mean.shape, generator=generator)
        value_ext, value_int = self.values(f)
        return Decision(
            action=action[0].numpy(), log_prob=float(policy.log_prob(action).sum()),
            focus=focus[0].numpy(), focus_log_prob=float(focus_policy.log_prob(focus).sum()),
            value_ext=float(value_ext), value_int=float(value_int))
