"""Intrinsic Curiosity Module (Pathak et al. 2017) on perception features."""
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class ICMConfig:
    """Sizes and loss balance of the curiosity module."""

    embed_dim: int = 64
    """Size of the embedding in which the forward model predicts."""
    hidden: int = 128
    """Hidden width of the forward and inverse models."""
    forward_weight: float = 0.2
    """beta: forward loss weight against (1 - beta) for the inverse loss (Pathak et al.: 0.2)."""


class ICM(nn.Module):
    """Forward and inverse dynamics on an embedding of the features.

    The inverse model (predict the action from two successive embeddings) shapes the
    embedding towards what the agent controls; the forward model's error in that embedding
    is the intrinsic reward.
    """

    def __init__(self, feature_dim: int, action_dim: int, config: ICMConfig):
        super().__init__()
        self.config = config
        e, h = config.embed_dim, config.hidden
        self.embed = nn.Sequential(nn.Linear(feature_dim, e), nn.ReLU(), nn.Linear(e, e))
        self.forward_model = nn.Sequential(nn.Linear(e + action_dim, h), nn.ReLU(),
                                           nn.Linear(h, e))
        self.inverse_model = nn.Sequential(nn.Linear(2 * e, h), nn.ReLU(),
                                           nn.Linear(h, action_dim))

    def errors(self, features: torch.Tensor, actions: torch.Tensor, next_features: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample forward error [B] and the inverse loss (a scalar)."""
        phi, next_phi = self.embed(features), self.embed(next_features)
        predicted = self.forward_model(torch.cat([phi, actions], dim=1))
        forward_error = 0.5 * (predicted - next_phi.detach()).pow(2).mean(dim=1)
        inverse = F.mse_loss(self.inverse_model(torch.cat([phi, next_phi], dim=1)), actions)
        return forward_error, inverse

    def loss(self, features, actions, next_features) -> tuple[torch.Tensor, dict[str, float]]:
        forward_error, inverse = self.errors(features, actions, next_features)
        forward = forward_error.mean()
        beta = self.config.forward_weight
        total = beta * forward + (1.0 - beta) * inverse
        return total, {'icm_forward': forward.item(), 'icm_inverse': inverse.item()}

    @torch.no_grad()
    def intrinsic_reward(self, features, actions, next_features) -> torch.Tensor:
        """The forward model's error per transition [B]: how surprising each step was."""
        return self.errors(features, actions, next_features)[0]
