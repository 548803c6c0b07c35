"""Self-supervised auxiliary losses that train perception online, one tick at a time.

The `aux_loss` parameter composes them with weights: `tpc`, `contrastive+vicreg:0.5`,
`none`. Every term sees the live features of the current frame (in the graph), the detached
features of the previous frame, the action taken in between and a short history of detached
feature vectors (64 floats each, never frames). Terms that need a batch encode other views
of the current frame (the fovea elsewhere, the periphery cropped differently) with gradients.

A tick holds one frame per stream: one for a node, one per environment in lock-step training
with several. Terms that link a frame to its stream's previous one leave out the streams
where the previous frame belongs to another episode (`continues`).
"""
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from perception_rl.actor_critic import mlp

AUX_TERMS = ('tpc', 'coherence', 'contrastive', 'vicreg', 'reconstruction', 'pisco')
"""The losses `aux_loss` can combine; `none` alone freezes the encoder."""


def parse_aux_loss(spec: str) -> dict[str, float]:
    """'tpc+vicreg:0.5' -> {'tpc': 1.0, 'vicreg': 0.5}; 'none' -> {} (frozen encoder).

    ValueError names the part that is wrong and lists what is accepted.
    """
    spec = spec.strip()
    if spec == 'none':
        return {}
    weights: dict[str, float] = {}
    for part in spec.split('+'):
        name, _, weight = part.strip().partition(':')
        if name not in AUX_TERMS:
            raise ValueError(f"aux_loss term {name!r} is not one of {', '.join(AUX_TERMS)} "
                             "(combine with '+', weigh with ':', e.g. 'tpc+vicreg:0.5'; "
                             "'none' for the frozen encoder)")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"aux_loss weight {weight!r} of {name!r} is not a number") from None
        if not np.isfinite(value) or value <= 0.0:
            raise ValueError(f"aux_loss weight of {name!r} must be a positive number, "
                             f"not {weight!r}")
        if name in weights:
            raise ValueError(f"aux_loss names {name!r} twice")
        weights[name] = value
    return weights


@dataclass
class AuxLossConfig:
    """Which auxiliary losses train perception, and their sizes."""

    spec: str = 'reconstruction'
    """The `aux_loss` parameter: terms joined by '+', each optionally ':weight'; or 'none'."""
    predictor_hidden: int = 128
    """Hidden width of the temporal predictor MLP (tpc)."""
    variance_target: float = 0.5
    """Per-dimension standard deviation below which the variance hinge pushes (vicreg)."""
    covariance_weight: float = 0.04
    """Weight of the covariance term inside vicreg (VICReg's 1:25 ratio to variance)."""
    views: int = 4
    """Other views of the current frame that vicreg measures the spread across."""
    contrastive_history: int = 64
    """Steps of detached features kept for the contrastive term."""
    contrastive_gap: int = 10
    """Features at least this many steps back are the negatives; one step back is the positive."""
    temperature: float = 0.1
    """Softmax temperature of the contrastive term (cosine similarities)."""
    reconstruction_fovea: float = 0.0
    """Weight of redrawing the fovea view in the reconstruction term, against 1 for the
    periphery; 0 redraws the periphery only. 0 reads the scene state best in the
    representation benchmark; an agent that must read the fovea's fine detail needs 0.1 or
    more, or online training erases that detail (docs/learning_benchmark.md)."""
    reconstruction_memory: int = 0
    """Ticks (the two small views of their frames) kept by the reconstruction term and replayed
    one per tick, replacing the best-reconstructed when a worse one arrives (the live-video
    seed's memory of 32). 0 keeps no frames at all."""
    pisco_shift: int = 4
    """Pixels of random shift between the two augmented views of the pisco term."""
    policy_actions: int = 2
    """Action components of the agent policy that pisco keeps consistent."""
    policy_hidden: int = 64
    """Hidden width of the agent's actor MLP (must match the agent's to take its weights)."""

    @property
    def weights(self) -> dict[str, float]:
        return parse_aux_loss(self.spec)


@dataclass
class AuxContext:
    """What one tick offers the loss terms."""

    features: torch.Tensor
    """Live features of each stream's current frame [B, D] (in the graph)."""
    prev_features: torch.Tensor
    """Detached features of each stream's previous frame [B, D]."""
    prev_action: torch.Tensor
    """The action taken between the two frames [B, A]."""
    motion: torch.Tensor
    """How much that action moves the view [B] (sum of |command| and of the fovea's shift)."""
    continues: torch.Tensor
    """[B] bool: the previous frame is of the same episode (False: the stream restarted)."""
    fovea: torch.Tensor
    """The current fovea views [B, 3, h, w] in [0, 1]."""
    periphery: torch.Tensor
    """The current periphery views [B, 3, H, W] in [0, 1]."""
    encode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    """(fovea, periphery) -> live features, for terms that need other views."""
    other_views: Callable[[int], tuple[torch.Tensor, torch.Tensor]]
    """count -> (fovea, periphery) batches of `count` other views of the current frames."""


def _mean_over(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
    """Mean of per-stream values [B] where mask [B] holds; None where it holds nowhere."""
    if not bool(mask.any()):
        return None
    return values[mask].mean()


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Each image shifted by up to `pad` pixels, edges replicated (DrQ's augmentation)."""
    if pad <= 0:
        return images
    height, width = images.shape[-2:]
    padded = F.pad(images, (pad, pad, pad, pad), mode='replicate')
    dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=generator).tolist()
    return padded[..., dy:dy + height, dx:dx + width]


class TemporalPrediction(nn.Module):
    """tpc: predict features_t from (features_{t-1}, action_{t-1}) (seed issue, option 1).

    The error trains the predictor and the encoder: good features make the world predictable.
    A constant encoder would predict perfectly, so combine it with vicreg or contrastive.
    """

    def __init__(self, feature_dim: int, action_dim: int, config: AuxLossConfig):
        super().__init__()
        self.predictor = nn.Sequential(
            nn.Linear(feature_dim + action_dim, config.predictor_hidden), nn.ReLU(),
            nn.Linear(config.predictor_hidden, feature_dim))

    def forward(self, ctx: AuxContext, history: 'FeatureHistory') -> torch.Tensor | None:
        predicted = self.predictor(torch.cat([ctx.prev_features, ctx.prev_action], dim=1))
        return _mean_over((predicted - ctx.features).pow(2).mean(dim=1), ctx.continues)


class TemporalCoherence(nn.Module):
    """coherence: consecutive features stay close unless the action moved the view (option 2)."""

    def forward(self, ctx: AuxContext, history: 'FeatureHistory') -> torch.Tensor | None:
        delta = (ctx.features - ctx.prev_features).pow(2).mean(dim=1)
        return _mean_over(delta / (1.0 + ctx.motion), ctx.continues)


class TemporalContrast(nn.Module):
    """contrastive: the features of one step back are the positive, those of `gap`+ steps back
    the negatives (option 3); InfoNCE over cosine similarities, as in ATC (Stooke et al. 2021).

    The keys were encoded by earlier versions of the encoder, so its own drift also tells old
    from recent: the benchmark finds this term alone keeps few dimensions (effective rank 5).
    """

    def __init__(self, config: AuxLossConfig):
        super().__init__()
        self.gap, self.temperature = config.contrastive_gap, config.temperature

    def forward(self, ctx: AuxContext, history: 'FeatureHistory') -> torch.Tensor | None:
        recent = history.recent
        if len(recent) <= self.gap:
            return None
        # Each stream's own past: [B, 1 + K, D], the positive first. Older features of an
        # earlier episode remain fair negatives; only the positive needs `continues`.
        keys = torch.stack([recent[-1], *list(recent)[:-self.gap]], dim=1)
        logits = torch.einsum('bd,bkd->bk', F.normalize(ctx.features, dim=1),
                              F.normalize(keys, dim=2))
        target = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
        losses = F.cross_entropy(logits / self.temperature, target, reduction='none')
        return _mean_over(losses, ctx.continues)


class VarianceCovariance(nn.Module):
    """vicreg: every dimension keeps its spread and the dimensions stay decorrelated across
    several views of the current frame (the variance and covariance terms of VICReg, Bardes
    et al. 2022).

    The spread is measured across `views` other views of the same frame (the fovea somewhere
    else, the periphery cropped differently), all encoded now with gradients. A window of past
    features would not do: their spread can come from the encoder's own drift between then
    and now, and the encoder learns to drift instead of to see (measured: features of a fixed
    input set became constant while the stream's spread stayed high).
    """

    def __init__(self, config: AuxLossConfig):
        super().__init__()
        self.target, self.cov_weight = config.variance_target, config.covariance_weight
        self.views = config.views

    def forward(self, ctx: AuxContext, history: 'FeatureHistory') -> torch.Tensor:
        batch = torch.cat([ctx.features, ctx.encode(*ctx.other_views(self.views))], dim=0)
        variance, covariance = variance_covariance(batch, self.target)
        return variance + self.cov_weight * covariance


def variance_covariance(batch: torch.Tensor, std_target: float
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """VICReg's variance term (hinge on each dimension's std across the batch [N, D]) and
    covariance term (squared off-diagonal covariances over D)."""
    n, dim = batch.shape
    centred = batch - batch.mean(dim=0)
    std = torch.sqrt(centred.pow(2).sum(dim=0) / (n - 1) + 1e-4)
    variance = F.relu(std_target - std).mean()
    cov = centred.T @ centred / (n - 1)
    off_diagonal = cov - torch.diag(torch.diagonal(cov))
    return variance, off_diagonal.pow(2).sum() / dim


class Decoder(nn.Module):
    """Features -> an image of a given size: a linear map to an eighth of the size, then three
    stride-2 transposed convolutions."""

    def __init__(self, feature_dim: int, hw: tuple[int, int]):
        super().__init__()
        self.size = hw
        self.base = ((hw[0] + 7) // 8, (hw[1] + 7) // 8)
        self.expand = nn.Linear(feature_dim, 32 * self.base[0] * self.base[1])
        self.decode = nn.Sequential(
            nn.ReLU(), nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1),
            nn.ReLU(), nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1),
            nn.ReLU(), nn.ConvTranspose2d(16, 3, 4, stride=2, padding=1), nn.Sigmoid())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        image = self.decode(self.expand(features).reshape(-1, 32, *self.base))
        if image.shape[-2:] != self.size:
            image = F.interpolate(image, size=self.size, mode='bilinear', align_corners=False)
        return image


class Reconstruction(nn.Module):
    """reconstruction: decoders redraw the views from the features (the live-video seed
    redraws its frame), optionally replaying one frame a tick from a small loss-prioritised
    memory.

    The fovea as well as the periphery (`reconstruction_fovea`): a loss that asks only for the
    periphery teaches the fovea stream to serve it, and the fovea's fine detail, the reason to
    have a fovea, fades from the features (perception_rl/Foveation-v1,
    docs/learning_benchmark.md). The error is the periphery's plus the weighted fovea's, per
    pixel.
    """

    def __init__(self, feature_dim: int, fovea_hw: tuple[int, int],
                 periphery_hw: tuple[int, int], config: AuxLossConfig):
        super().__init__()
        self.fovea_weight = config.reconstruction_fovea
        self.fovea_decoder = Decoder(feature_dim, fovea_hw) if self.fovea_weight > 0 else None
        self.periphery_decoder = Decoder(feature_dim, periphery_hw)
        self.capacity = config.reconstruction_memory
        self.memory: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.memory_loss: list[float] = []
        self._generator = torch.Generator().manual_seed(0)

    def _errors(self, features: torch.Tensor, fovea: torch.Tensor,
                periphery: torch.Tensor) -> torch.Tensor:
        """The mean squared error of each redrawn frame [B]."""
        errors = (self.periphery_decoder(features) - periphery).pow(2).mean(dim=(1, 2, 3))
        if self.fovea_decoder is not None:
            errors = errors + self.fovea_weight * (
                self.fovea_decoder(features) - fovea).pow(2).mean(dim=(1, 2, 3))
        return errors

    def forward(self, ctx: AuxContext, history: 'FeatureHistory') -> torch.Tensor:
        loss = self._errors(ctx.features, ctx.fovea, ctx.periphery).mean()
        if self.capacity > 0:
            loss = self._with_memory(ctx, loss)
        return loss

    def _with_memory(self, ctx: AuxContext, loss: torch.Tensor) -> torch.Tensor:
        current = float(loss.detach())
        if self.memory:
            index = int(torch.randint(len(self.memory), (1,), generator=self._generator))
            fovea, periphery = self.memory[index]
            replay = self._errors(ctx.encode(fovea, periphery), fovea, periphery).mean()
            self.memory_loss[index] = float(replay.detach())
            loss = (loss + replay) / 2.0
        entry = (ctx.fovea.detach(), ctx.periphery.detach())
        if len(self.memory) < self.capacity:
            self.memory.append(entry)
            self.memory_loss.append(current)
        else:
            best = int(np.argmin(self.memory_loss))
            if current > self.memory_loss[best]:
                self.memory[best], self.memory_loss[best] = entry, current
        return loss


class PolicyConsistency(nn.Module):
    """pisco: the agent's policy acts the same on two augmented views of the frame (PiSCO,
    Arnold et al. 2023): the symmetric KL between its action distributions on the two.

    The policy is the agent's: its actor and focus weights arrive through `load_policy` and are
    never trained here. Until the first weights arrive it is the fixed random initialisation.
    """

    def __init__(self, feature_dim: int, config: AuxLossConfig, seed: int):
        super().__init__()
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed + 7919)
        self.actor = mlp(feature_dim, config.policy_hidden, config.policy_actions, 0.01)
        self.focus = mlp(feature_dim, config.policy_hidden, 2, 0.01)
        torch.random.set_rng_state(generator_state)
        self.register_buffer('log_std', torch.full((config.policy_actions + 2,), -0.5))
        self.requires_grad_(False)
        self.shift = config.pisco_shift
        self._generator = torch.Generator().manual_seed(seed)

    def load_policy(self, actor: dict[str, torch.Tensor], focus: dict[str, torch.Tensor],
                    log_std: torch.Tensor) -> None:
        """Take the agent's current policy; a shape mismatch raises ValueError."""
        try:
            self.actor.load_state_dict(actor)
            self.focus.load_state_dict(focus)
        except RuntimeError as error:
            raise ValueError(f'policy weights do not fit: {error}') from None
        if log_std.shape != self.log_std.shape:
            raise ValueError(f'policy log_std has shape {tuple(log_std.shape)}, '
                             f'expected {tuple(self.log_std.shape)}')
        self.log_std.copy_(log_std)

    def _mean(self, features: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.actor(features), self.focus(features)], dim=1)

    def forward(self, ctx: AuxContext, history: 'FeatureHistory') -> torch.Tensor:
        views = [(random_shift(ctx.fovea, self.shift, self._generator),
                  random_shift(ctx.periphery, self.shift, self._generator)) for _ in range(2)]
        features = ctx.encode(torch.cat([views[0][0], views[1][0]]),
                              torch.cat([views[0][1], views[1][1]]))
        first, second = self._mean(features).chunk(2)
        # KL between two Gaussians with the same std: squared mean difference over 2 var.
        # Each direction stops the gradient of its target, as PiSCO's detach_distribution.
        variance = torch.exp(2.0 * self.log_std)
        forward = (first - second.detach()).pow(2) / (2.0 * variance)
        backward = (second - first.detach()).pow(2) / (2.0 * variance)
        return (forward.sum(dim=1) + backward.sum(dim=1)).mean() / 2.0


class FeatureHistory:
    """Detached feature vectors [B, D] of the last few ticks, newest last."""

    def __init__(self, length: int):
        self.recent: deque[torch.Tensor] = deque(maxlen=length)

    def add(self, features: torch.Tensor) -> None:
        self.recent.append(features)

    def clear(self) -> None:
        self.recent.clear()


class AuxiliaryObjective(nn.Module):
    """The weighted sum of the configured terms, and the history they share."""

    def __init__(self, config: AuxLossConfig, feature_dim: int, action_dim: int,
                 fovea_hw: tuple[int, int], periphery_hw: tuple[int, int], seed: int = 0):
        super().__init__()
        self.config = config
        self.weights = config.weights
        builders = {
            'tpc': lambda: TemporalPrediction(feature_dim, action_dim, config),
            'coherence': TemporalCoherence,
            'contrastive': lambda: TemporalContrast(config),
            'vicreg': lambda: VarianceCovariance(config),
            'reconstruction': lambda: Reconstruction(feature_dim, fovea_hw, periphery_hw, config),
            'pisco': lambda: PolicyConsistency(feature_dim, config, seed),
        }
        self.terms = nn.ModuleDict({name: builders[name]() for name in self.weights})
        self.history = FeatureHistory(config.contrastive_history)

    def forward(self, ctx: AuxContext) -> tuple[torch.Tensor | None, dict[str, float]]:
        """The total loss (None while no term has enough history yet) and each term's value."""
        total, values = None, {}
        for name, term in self.terms.items():
            loss = term(ctx, self.history)
            if loss is None:
                continue
            values[name] = float(loss.detach())
            weighted = self.weights[name] * loss
            total = weighted if total is None else total + weighted
        if total is not None:
            values['total'] = float(total.detach())
        return total, values

    def generators(self) -> dict[str, torch.Generator]:
        """The random generators of the terms that draw random numbers, by term name."""
        return {name: term._generator for name, term in self.terms.items()
                if isinstance(getattr(term, '_generator', None), torch.Generator)}

    def remember(self, features: torch.Tensor) -> None:
        """Add this frame's detached features to the history."""
        self.history.add(features.detach())

    def reset(self) -> None:
        """Forget the history (after a jump in time: a looping bag, a camera restart)."""
        self.history.clear()
