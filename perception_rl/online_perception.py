"""The perception tick: forward with gradients, auxiliary loss, optimizer step, detached features."""
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from perception_rl.aux_losses import AUX_LOSSES, AuxLossConfig, TemporalPredictiveCoding
from perception_rl.checkpoint import (LoadedCheckpoint, check_architecture, config_hash,
                                      restore_state, save_checkpoint, state_tensors)
from perception_rl.encoder import EncoderConfig, VisualPerception
from perception_rl.foveation import Roi

CHECKPOINT_PREFIX = 'perception'
ACTION_DIM = 8
"""The action perception conditions on: cmd_vel's 6 components and the fovea centre (x, y)."""


@dataclass
class PerceptionConfig:
    """Everything that defines an online-learning perception core."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    aux: AuxLossConfig = field(default_factory=AuxLossConfig)
    learning_rate: float = 3e-4
    """Adam learning rate of the encoder and the auxiliary heads."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global norm before each step."""
    seed: int = 0
    """Seed of the initial weights."""
    device: str = 'cpu'
    """Torch device: cpu, cuda or auto (cuda when available)."""


@dataclass
class PerceptionStep:
    """What one tick produced."""

    features: np.ndarray
    """The detached features, float32 [feature_dim]."""
    trained: bool
    """Whether an optimizer step ran on this frame."""
    loss_terms: dict[str, float]
    """The auxiliary loss and its terms (empty when no step ran)."""
    forward_ms: float
    """Time of the view extraction and forward pass."""
    train_ms: float
    """Time of the loss, backward pass and optimizer step (0 when none ran)."""


def resolve_device(name: str) -> torch.device:
    """cpu, cuda or auto -> a torch device; cuda without a GPU is an error, not a fallback."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if name == 'cuda' and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA device "
                         "(use 'cpu' or 'auto')")
    if name not in ('cpu', 'cuda'):
        raise ValueError(f"device must be cpu, cuda or auto, not {name!r}")
    return torch.device(name)


class OnlinePerception:
    """The perception core of one camera stream, trained on every frame it sees."""

    def __init__(self, config: PerceptionConfig):
        if config.aux.kind not in AUX_LOSSES:
            raise ValueError(f"aux_loss must be one of {AUX_LOSSES}, not {config.aux.kind!r}")
        self.config = config
        self.device = resolve_device(config.device)
        torch.manual_seed(config.seed)
        self.encoder = VisualPerception(config.encoder).to(self.device)
        self.aux = TemporalPredictiveCoding(
            config.encoder.feature_dim, ACTION_DIM, config.aux).to(self.device)
        params = list(self.encoder.parameters()) + list(self.aux.parameters())
        self.optimizer = torch.optim.Adam(params, lr=config.learning_rate)
        self.training = config.aux.kind != 'none'
        self.train_steps = 0
        self.skipped_nonfinite = 0
        self._prev_features: torch.Tensor | None = None

    @property
    def learns(self) -> bool:
        """Whether this core has a loss at all (`none` is the frozen random baseline)."""
        return self.config.aux.kind != 'none'

    def step(self, frame: np.ndarray, roi: Roi, action: np.ndarray) -> PerceptionStep:
        """One tick on a HxWx3 uint8 frame seen through `roi`.

        :param action: float [ACTION_DIM], the action taken between the previous frame and this
            one (the latest cmd_vel and the fovea centre this frame is seen through).
        """
        start = time.perf_counter()
        action_t = torch.as_tensor(
            action, dtype=torch.float32, device=self.device).reshape(1, ACTION_DIM)
        train = self.training and self.learns and self._prev_features is not None
        fovea, periphery = self.encoder.views(frame, roi, self.device)
        with torch.set_grad_enabled(train):
            features = self.encoder(fovea, periphery)
        forward_done = time.perf_counter()
        terms: dict[str, float] = {}
        if train:
            loss, terms = self.aux(features, self._prev_features, action_t)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(
                self.optimizer.param_groups[0]['params'], self.config.max_grad_norm)
            if torch.isfinite(loss) and torch.isfinite(norm):
                self.optimizer.step()
                self.train_steps += 1
            else:  # one bad frame must not poison the weights
                self.skipped_nonfinite += 1
                train = False
        detached = features.detach()
        self._prev_features = detached
        end = time.perf_counter()
        return PerceptionStep(
            features=detached[0].cpu().numpy().astype(np.float32, copy=False),
            trained=train, loss_terms=terms,
            forward_ms=1e3 * (forward_done - start),
            train_ms=1e3 * (end - forward_done) if train else 0.0)

    def reset_history(self) -> None:
        """Forget the previous step, so no loss links frames across a jump in time."""
        self._prev_features = None
        self.aux.reset()

    def architecture(self) -> dict:
        """What a checkpoint must match to be loaded into this core."""
        return {'encoder': asdict(self.config.encoder), 'aux_loss': self.config.aux.kind,
                'aux_hidden': self.config.aux.predictor_hidden, 'action_dim': ACTION_DIM}

    def save(self, directory: str | Path, keep: int = 3) -> Path:
        """Write a checkpoint of weights, optimizer state and counters."""
        tensors, meta = state_tensors({'encoder': self.encoder, 'aux': self.aux},
                                      {'adam': self.optimizer})
        meta.update(kind=CHECKPOINT_PREFIX, architecture=self.architecture(),
                    architecture_hash=config_hash(self.architecture()),
                    config=asdict(self.config), train_steps=self.train_steps)
        return save_checkpoint(directory, CHECKPOINT_PREFIX, self.train_steps, tensors, meta,
                               keep)

    def load(self, checkpoint: LoadedCheckpoint) -> None:
        """Continue from a checkpoint; ValueError says precisely what does not match."""
        check_architecture(checkpoint, self.architecture())
        restore_state(checkpoint.tensors, checkpoint.metadata,
                      {'encoder': self.encoder, 'aux': self.aux}, {'adam': self.optimizer})
        for group in self.optimizer.param_groups:  # the configured rate, not the saved one
            group['lr'] = self.config.learning_rate
        self.train_steps = int(checkpoint.metadata['train_steps'])
        self.reset_history()
