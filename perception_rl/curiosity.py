"""Curiosity on perception features: the intrinsic reward and the loss that trains it.

Three modules, chosen by CuriosityConfig.kind, all with the same two calls:
`loss(features, executed, next_features)` for the PPO update and `intrinsic_reward(...)` per
transition. `executed` is the action as the environment received it (ActorCritic.executed).

- icm: forward and inverse dynamics (Pathak et al. 2017); reward: the forward model's error.
- rnd: distillation of a fixed random network (Burda et al. 2018); reward: the error.
- snd: distillation of a target trained with VICReg on consecutive features (Self-supervised
  Network Distillation, the SND-VIC variant); reward: the error.
- none: no intrinsic reward.
"""
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from perception_rl.aux_losses import variance_covariance

KINDS = ('icm', 'rnd', 'snd', 'none')


@dataclass
class CuriosityConfig:
    """Which curiosity module, and its sizes."""

    kind: str = 'icm'
    """icm, rnd, snd or none."""
    embed_dim: int = 64
    """Size of the embedding the reward is measured in."""
    hidden: int = 128
    """Hidden width of the models."""
    forward_weight: float = 0.2
    """icm: beta, the forward loss weight against (1 - beta) for the inverse loss (Pathak et
    al.: 0.2)."""
    vicreg_weights: tuple[float, float, float] = (25.0, 25.0, 1.0)
    """snd: invariance, variance and covariance weights of the target's VICReg loss (Bardes et
    al. 2022's defaults)."""


def _mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, outputs))


class ICM(nn.Module):
    """Forward and inverse dynamics on an embedding of the features.

    The inverse model (predict the action from two successive embeddings) shapes the
    embedding towards what the agent controls; the forward model's error in that embedding
    is the intrinsic reward.
    """

    def __init__(self, feature_dim: int, action_dim: int, discrete: bool,
                 config: CuriosityConfig):
        super().__init__()
        self.config, self.discrete = config, discrete
        e, h = config.embed_dim, config.hidden
        self.embed = nn.Sequential(nn.Linear(feature_dim, e), nn.ReLU(), nn.Linear(e, e))
        self.forward_model = _mlp(e + action_dim, h, e)
        self.inverse_model = _mlp(2 * e, h, action_dim)

    def _errors(self, features: torch.Tensor, executed: torch.Tensor,
                next_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample forward error [B] and the inverse loss (a scalar)."""
        phi, next_phi = self.embed(features), self.embed(next_features)
        predicted = self.forward_model(torch.cat([phi, executed], dim=1))
        forward_error = 0.5 * (predicted - next_phi.detach()).pow(2).mean(dim=1)
        inverse = self.inverse_model(torch.cat([phi, next_phi], dim=1))
        inverse_loss = (F.cross_entropy(inverse, executed.argmax(dim=1)) if self.discrete
                        else F.mse_loss(inverse, executed))
        return forward_error, inverse_loss

    def loss(self, features, executed, next_features) -> tuple[torch.Tensor, dict[str, float]]:
        forward_error, inverse = self._errors(features, executed, next_features)
        forward = forward_error.mean()
        beta = self.config.forward_weight
        total = beta * forward + (1.0 - beta) * inverse
        return total, {'icm_forward': forward.item(), 'icm_inverse': inverse.item()}

    @torch.no_grad()
    def intrinsic_reward(self, features, executed, next_features) -> torch.Tensor:
        """The forward model's error per transition [B]: how surprising each step was."""
        return self._errors(features, executed, next_features)[0]


class Distillation(nn.Module):
    """A predictor learns to reproduce a target network's output on the features reached;
    where it fails, the state is novel. rnd: the target stays random; snd: the target learns
    with VICReg, consecutive features as the two views."""

    def __init__(self, feature_dim: int, config: CuriosityConfig):
        super().__init__()
        self.config = config
        self.trains_target = config.kind == 'snd'
        e, h = config.embed_dim, config.hidden
        self.target = _mlp(feature_dim, h, e)
        self.predictor = _mlp(feature_dim, h, e)
        if not self.trains_target:
            self.target.requires_grad_(False)

    def _errors(self, next_features: torch.Tensor) -> torch.Tensor:
        target = self.target(next_features).detach()
        return (self.predictor(next_features) - target).pow(2).mean(dim=1)

    def loss(self, features, executed, next_features) -> tuple[torch.Tensor, dict[str, float]]:
        distillation = self._errors(next_features).mean()
        terms = {f'{self.config.kind}_distillation': distillation.item()}
        if not self.trains_target:
            return distillation, terms
        z, next_z = self.target(features), self.target(next_features)
        invariance = F.mse_loss(z, next_z)
        variance, covariance = (sum(pair) / 2.0 for pair in zip(
            variance_covariance(z, 1.0), variance_covariance(next_z, 1.0)))
        w_inv, w_var, w_cov = self.config.vicreg_weights
        target_loss = w_inv * invariance + w_var * variance + w_cov * covariance
        terms.update(snd_invariance=invariance.item(), snd_variance=variance.item(),
                     snd_covariance=covariance.item())
        return distillation + target_loss, terms

    @torch.no_grad()
    def intrinsic_reward(self, features, executed, next_features) -> torch.Tensor:
        return self._errors(next_features)


class NoCuriosity(nn.Module):
    """No intrinsic reward and nothing to learn."""

    def loss(self, features, executed, next_features) -> tuple[torch.Tensor, dict[str, float]]:
        return features.new_zeros(()), {}

    def intrinsic_reward(self, features, executed, next_features) -> torch.Tensor:
        return features.new_zeros(len(features))


def make_curiosity(config: CuriosityConfig, feature_dim: int, action_dim: int,
                   discrete: bool) -> nn.Module:
    """The module config.kind names (ValueError for an unknown kind)."""
    if config.kind == 'icm':
        return ICM(feature_dim, action_dim, discrete, config)
    if config.kind in ('rnd', 'snd'):
        return Distillation(feature_dim, config)
    if config.kind == 'none':
        return NoCuriosity()
    raise ValueError(f"'curiosity' must be one of {KINDS}, not {config.kind!r}")
