"""The perception tick: forward with gradients, auxiliary loss, optimizer step, detached features."""
import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from perception_rl.aux_losses import AuxContext, AuxiliaryObjective, AuxLossConfig
from perception_rl.checkpoint import (LoadedCheckpoint, check_architecture, config_hash,
                                      generator_tensors, restore_generators, restore_state,
                                      save_checkpoint, state_tensors)
from perception_rl.devices import resolve_device, synchronize
from perception_rl.encoder import EncoderConfig, VisualPerception, images_to_tensor
from perception_rl.foveation import Roi, crop_fovea, downsample_periphery
from perception_rl.last_good import LastGood
from perception_rl.orthogonal_gradients import OrthogonalGradients

CHECKPOINT_PREFIX = 'perception'
ACTION_DIM = 8
"""The action perception_node conditions on: cmd_vel's 6 components and the fovea centre."""
PUBLISHED = ('online', 'target')
"""Which encoder's features leave perception: the one learning, or its slow EMA copy."""
ACTION_LIMIT = 5.0
"""cmd_vel components are clipped to +-this before perception conditions on them."""


def twist_action(components) -> np.ndarray:
    """cmd_vel's 6 components (linear x, y, z, angular x, y, z) as the motor part of the action
    perception conditions on: finite (a non-finite component is 0) and within ACTION_LIMIT."""
    values = np.nan_to_num(np.asarray(components, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(values, -ACTION_LIMIT, ACTION_LIMIT)


@dataclass
class PerceptionConfig:
    """Everything that defines an online-learning perception core."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    aux: AuxLossConfig = field(default_factory=AuxLossConfig)
    action_dim: int = ACTION_DIM
    """Size of the action perception conditions on: the motor action's components (cmd_vel's
    6, or a discrete action one-hot), then the fovea centre (x, y) in [-1, 1]."""
    learning_rate: float = 1e-4
    """Adam learning rate of the encoder and the auxiliary heads (1e-4 read the state better
    than 3e-4 on held-out frames: docs/representation_benchmark.md)."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global norm before each step."""
    orthogonal_gradient_decay: float = 0.0
    """Per-step decay of the gradient history each step's gradient is made orthogonal to
    (perception_rl/orthogonal_gradients.py); 0 gives Adam the gradients as they are. 0.9 put
    both probes of the representation benchmark beyond the seed spread in every scene
    family, but slowed an agent learning on the features (MiniGrid DoorKey-5x5: final return
    0.79 against 0.96 without; docs/learning_benchmark.md), so it is off by default."""
    orthogonal_gradient_strength: float = 1.0
    """Share of each gradient's component along that history which is removed (1: all of it,
    as Han et al. 2025). 0.5 learns a view that changes slowly as fast as no projection, where
    the whole one learns it more slowly, but 0.5 and 0.8 lost the stream probe's lead in
    checker-wander."""
    orthogonal_gradient_baseline_decay: float = 0.0
    """Per-step decay of a slow average of the gradients (the baseline) that the projection
    leaves in: only the history's part beyond it is removed; 0 removes along the whole
    history. 0.999 gives the agent back what the whole projection took (DoorKey-5x5: 0.95)
    and keeps checker-wander's stream beyond the spread, but four other families' streams
    fall within it (docs/representation_benchmark.md, "Orthogonal gradients with a
    baseline")."""
    frozen_conv_layers: int = 0
    """Bottom convolutions of each stream kept at their initial weights (0 to 3): PiSCO finds
    bottom layers task-agnostic and top layers the ones that need adapting."""
    target_decay: float = 0.0
    """Per-step decay of the EMA target encoder (BYOL/SPR); 0 keeps no target encoder."""
    publish: str = 'online'
    """Whose features are published: 'online' or the slow 'target' (needs target_decay > 0)."""
    train_every: int = 1
    """Train on one frame in this many (1: every frame)."""
    train_budget_ms: float = 0.0
    """Skip training on a frame when its lateness plus the expected time of a trained tick
    would pass this many ms; 0 never skips for time."""
    nonfinite_patience: int = 10
    """Training steps skipped for a non-finite loss or gradient, in a row, after which the
    last good weights are restored."""
    good_every: int = 100
    """Training steps between copies of the weights kept as the last good ones."""
    seed: int = 0
    """Seed of the initial weights."""
    device: str = 'cpu'
    """Torch device: cpu, cuda or auto (cuda when available)."""


@dataclass
class PerceptionStep:
    """What one tick produced."""

    features: np.ndarray
    """The detached published features, float32 [feature_dim] ([B, feature_dim] from
    step_batch)."""
    trained: bool
    """Whether an optimizer step ran on this frame."""
    loss_terms: dict[str, float]
    """The auxiliary loss and its terms (empty when no step ran)."""
    forward_ms: float
    """Time of the view extraction and forward pass (both encoders)."""
    train_ms: float
    """Time of the loss, backward pass and optimizer step (0 when none ran)."""
    fovea_detail: np.ndarray | None = None
    """float32 [B]: what each stream's fovea shows beyond its periphery (`fovea_detail`), the
    reward and the cue of a focus that looks for detail; None unless asked for."""


def validate(config: PerceptionConfig) -> None:
    """ValueError naming the setting when the configuration cannot run."""
    config.aux.weights  # noqa: B018 -- parsing raises on a bad aux_loss
    if config.publish not in PUBLISHED:
        raise ValueError(f"'publish' must be one of {PUBLISHED}, not {config.publish!r}")
    if config.publish == 'target' and config.target_decay <= 0.0:
        raise ValueError("'publish' is 'target' but there is no target encoder: set "
                         "'target_decay' in (0, 1)")
    if not 0.0 <= config.target_decay < 1.0:
        raise ValueError(f"'target_decay' must lie in [0, 1), not {config.target_decay}")
    if not 0.0 <= config.orthogonal_gradient_decay < 1.0:
        raise ValueError(f"'orthogonal_gradient_decay' must lie in [0, 1), not "
                         f'{config.orthogonal_gradient_decay}')
    if not 0.0 <= config.orthogonal_gradient_baseline_decay < 1.0:
        raise ValueError(f"'orthogonal_gradient_baseline_decay' must lie in [0, 1), not "
                         f'{config.orthogonal_gradient_baseline_decay}')
    if not 0.0 < config.orthogonal_gradient_strength <= 1.0:
        raise ValueError(f"'orthogonal_gradient_strength' must lie in (0, 1], not "
                         f'{config.orthogonal_gradient_strength}')
    if not 0 <= config.frozen_conv_layers <= 3:
        raise ValueError(f"'frozen_conv_layers' must be 0 to 3, not "
                         f'{config.frozen_conv_layers}')
    if config.action_dim < 3:
        raise ValueError(f"'action_dim' must be at least 3 (an action and the fovea centre), "
                         f'not {config.action_dim}')
    if config.train_every < 1:
        raise ValueError(f"'train_every' must be at least 1, not {config.train_every}")


@torch.no_grad()
def fovea_detail(fovea: torch.Tensor, periphery: torch.Tensor, frames: list[np.ndarray],
                 rois: list[Roi]) -> torch.Tensor:
    """What each fovea view shows beyond the periphery: the mean squared difference [B]
    between the fovea [B, 3, s, s] and the periphery's [B, 3, h, w] picture of the same
    region, sampled up to the fovea's size.

    High where the fovea resolves what the periphery averages away (fine stripes, text,
    texture), low on flat colour and coarse shapes, which the periphery already shows: where
    a fovea is worth putting, whatever the task (docs/learning_benchmark.md).
    """
    theta = torch.zeros(len(rois), 2, 3)
    for i, (frame, roi) in enumerate(zip(frames, rois)):
        height, width = frame.shape[:2]
        roi = roi.clipped_to(width, height)
        theta[i, 0, 0], theta[i, 1, 1] = roi.width / width, roi.height / height
        theta[i, 0, 2] = (2 * roi.x + roi.width) / width - 1.0
        theta[i, 1, 2] = (2 * roi.y + roi.height) / height - 1.0
    grid = F.affine_grid(theta.to(periphery.device), list(fovea.shape), align_corners=False)
    seen = F.grid_sample(periphery, grid, mode='bilinear', padding_mode='border',
                         align_corners=False)
    return (fovea - seen).pow(2).mean(dim=(1, 2, 3))


class OnlinePerception:
    """The perception core of one camera stream, trained online on the frames it sees."""

    def __init__(self, config: PerceptionConfig):
        validate(config)
        self.config = config
        self.device = resolve_device(config.device)
        torch.manual_seed(config.seed)
        c = config.encoder
        self.encoder = VisualPerception(c).to(self.device)
        self.aux = AuxiliaryObjective(config.aux, c.feature_dim, config.action_dim,
                                      (c.fovea_size, c.fovea_size),
                                      (c.periphery_height, c.periphery_width),
                                      config.seed).to(self.device)
        self.target = None
        if config.target_decay > 0.0:
            self.target = copy.deepcopy(self.encoder).requires_grad_(False)
        self.encoder.freeze_conv_layers(config.frozen_conv_layers)
        self._params = [p for p in [*self.encoder.parameters(), *self.aux.parameters()]
                        if p.requires_grad]
        # fused: one kernel over all parameters instead of a loop of small ones; the training
        # step took 8.8 ms instead of 14.8 ms (p50, one thread, a loaded 2-core machine,
        # docs/realtime_benchmark.md).
        self.optimizer = torch.optim.Adam(self._params, lr=config.learning_rate, fused=True)
        self.orthogonal = None
        if config.orthogonal_gradient_decay > 0.0:
            self.orthogonal = OrthogonalGradients(self._params,
                                                  config.orthogonal_gradient_decay,
                                                  config.orthogonal_gradient_strength,
                                                  config.orthogonal_gradient_baseline_decay)
        self.training = bool(self.aux.weights)
        self.train_steps = 0
        self.frames = 0
        self.last_good = LastGood(list(self._modules().values()), self.optimizer,
                                  config.nonfinite_patience)
        self.skipped_cadence = 0
        self.skipped_budget = 0
        self.expected_tick_ms = 0.0
        self._prev: tuple[torch.Tensor, torch.Tensor] | None = None  # (features, roi centre)
        self._view_rng = np.random.default_rng(config.seed)
        self._drift_probe: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def skipped_nonfinite(self) -> int:
        """Training steps skipped for a non-finite loss or gradient."""
        return self.last_good.skipped

    @property
    def learns(self) -> bool:
        """Whether this core has a loss at all (`none` is the frozen random baseline)."""
        return bool(self.aux.weights)

    def step(self, frame: np.ndarray, roi: Roi, action: np.ndarray,
             lateness_ms: float = 0.0, detail: bool = False) -> PerceptionStep:
        """One tick on a HxWx3 uint8 frame seen through `roi` (one stream: a node's camera).

        :param action: float [action_dim], the action taken between the previous frame and
            this one (the latest cmd_vel, or a discrete action one-hot) and the fovea centre
            this frame is seen through.
        :param lateness_ms: how late this frame arrived, for the training budget.
        :param detail: also measure the fovea's `fovea_detail` (a float [1]).
        """
        step = self.step_batch([frame], [roi], np.asarray(action)[None], lateness_ms=lateness_ms,
                               detail=detail)
        step.features = step.features[0]
        return step

    def step_batch(self, frames: list[np.ndarray], rois: list[Roi], actions: np.ndarray,
                   starts: np.ndarray | None = None, lateness_ms: float = 0.0,
                   detail: bool = False) -> PerceptionStep:
        """One tick on one frame per stream (several environments in lock-step training).

        :param actions: float [B, action_dim], as `step`'s action, per stream.
        :param starts: [B] bool, True where the stream's frame begins a new episode, so that
            no loss links it to the stream's previous frame (None: none does).
        :param detail: also measure each fovea's `fovea_detail` (about 0.1 ms a stream).
        :returns: a PerceptionStep whose features are [B, feature_dim].
        """
        start = time.perf_counter()
        streams = len(frames)
        action_t = torch.as_tensor(np.asarray(actions), dtype=torch.float32,
                                   device=self.device).reshape(streams, self.config.action_dim)
        if self._prev is not None and len(self._prev[0]) != streams:
            self.reset_history()  # another number of streams: nothing links to the last tick
        continues = torch.ones(streams, dtype=torch.bool, device=self.device)
        if starts is not None:
            continues &= ~torch.as_tensor(np.asarray(starts, bool), device=self.device)
        train = self._should_train(lateness_ms) and bool(continues.any())
        views = [self.encoder.views(f, r, self.device) for f, r in zip(frames, rois)]
        fovea = torch.cat([v[0] for v in views])
        periphery = torch.cat([v[1] for v in views])
        if self._drift_probe is None:  # mirrored: the first views are the encoder's anchor
            self._drift_probe = (fovea[:1].flip(-1), periphery[:1].flip(-1))
        with torch.set_grad_enabled(train):
            features = self.encoder(fovea, periphery)
        key = features.detach()
        if self.target is not None:
            with torch.no_grad():
                key = self.target(fovea, periphery)
        synchronize(self.device)
        forward_done = time.perf_counter()
        terms: dict[str, float] = {}
        if train:
            terms = self._train(frames, rois, features, action_t, continues, fovea, periphery)
            train = bool(terms)
        if self.learns:
            self.aux.remember(key)
        published = key if self.config.publish == 'target' else features.detach()
        self._prev = (features.detach(), action_t[:, -2:])
        self.frames += 1
        published = published.cpu().numpy().astype(np.float32, copy=False)
        end = time.perf_counter()
        train_ms = 1e3 * (end - forward_done) if train else 0.0
        if train and self.train_steps > 1:  # the first step pays for allocations
            tick_ms = 1e3 * (end - start)
            self.expected_tick_ms = (tick_ms if self.expected_tick_ms == 0.0 else
                                     0.9 * self.expected_tick_ms + 0.1 * tick_ms)
        return PerceptionStep(
            features=published,
            trained=train, loss_terms=terms,
            forward_ms=1e3 * (forward_done - start), train_ms=train_ms,
            fovea_detail=(fovea_detail(fovea, periphery, frames, rois).cpu().numpy()
                          if detail else None))

    def _should_train(self, lateness_ms: float) -> bool:
        if not (self.training and self.learns and self._prev is not None):
            return False
        if self.frames % self.config.train_every:
            self.skipped_cadence += 1
            return False
        budget = self.config.train_budget_ms
        if budget > 0.0 and lateness_ms + self.expected_tick_ms > budget:
            self.skipped_budget += 1
            # A skip measures nothing: let the estimate sink, so that one slow step cannot
            # starve training for good, and the next trained tick measures again.
            self.expected_tick_ms *= 0.9
            return False
        return True

    def _other_views(self, frames: list[np.ndarray], rois: list[Roi], count: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """`count` other views of the frames, taken from each frame in turn: its fovea region
        at random places, the periphery of a random crop of 60 to 100 % of the frame's width
        and height."""
        rng, c = self._view_rng, self.config.encoder
        foveae, peripheries = [], []
        for i in range(count):
            frame, fovea_roi = frames[i % len(frames)], rois[i % len(frames)]
            height, width = frame.shape[:2]
            cx, cy = rng.uniform(-1.0, 1.0, 2)
            roi = Roi.around(cx, cy, width, height, fovea_roi.width, fovea_roi.height)
            foveae.append(crop_fovea(frame, roi, c.fovea_size))
            # at least a pixel: 60 % of a 1-pixel-wide frame is still that pixel
            w, h = np.maximum(1, (rng.uniform(0.6, 1.0, 2) * (width, height)).astype(int))
            x, y = rng.integers(0, width - w + 1), rng.integers(0, height - h + 1)
            peripheries.append(downsample_periphery(frame[y:y + h, x:x + w],
                                                    c.periphery_width, c.periphery_height))
        return images_to_tensor(np.stack(foveae), self.device), \
            images_to_tensor(np.stack(peripheries), self.device)

    def _train(self, frames: list[np.ndarray], rois: list[Roi], features: torch.Tensor,
               action: torch.Tensor, continues: torch.Tensor, fovea: torch.Tensor,
               periphery: torch.Tensor) -> dict[str, float]:
        """One optimizer step on this tick; {} when no term has history yet or it failed."""
        prev_features, prev_centre = self._prev
        motion = (action[:, :-2].abs().sum(dim=1)
                  + (action[:, -2:] - prev_centre).abs().sum(dim=1))
        loss, terms = self.aux(AuxContext(
            features=features, prev_features=prev_features, prev_action=action, motion=motion,
            continues=continues, fovea=fovea, periphery=periphery, encode=self.encoder,
            other_views=lambda count: self._other_views(frames, rois, count)))
        if loss is None:
            return {}
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self._params, self.config.max_grad_norm)
        if not (torch.isfinite(loss) and torch.isfinite(norm)):
            # One bad frame must not poison the weights; a run of them means the weights
            # themselves went bad.
            if self.last_good.failed():
                self.last_good.restore()
            return {}
        if self.orthogonal is not None:
            self.orthogonal.project_()
        self.optimizer.step()
        self.train_steps += 1
        self.last_good.succeeded()
        if self.train_steps % self.config.good_every == 0:
            self.last_good.snapshot()
        if self.target is not None:
            with torch.no_grad():
                decay = self.config.target_decay
                for target, online in zip(self.target.parameters(), self.encoder.parameters()):
                    target.lerp_(online, 1.0 - decay)
        return terms

    @torch.no_grad()
    def reference_features(self) -> np.ndarray | None:
        """The published encoder's features of a fixed input, the first frame seen mirrored
        (None before it): how they move over time is the drift the agent has to live with."""
        if self._drift_probe is None:
            return None
        encoder = self.target if self.config.publish == 'target' else self.encoder
        return encoder(*self._drift_probe)[0].cpu().numpy()

    def load_policy(self, actor: dict[str, torch.Tensor], focus: dict[str, torch.Tensor],
                    log_std: torch.Tensor) -> None:
        """Give the pisco term the agent's current policy (ValueError when it does not fit)."""
        if 'pisco' not in self.aux.terms:
            raise ValueError('this perception core has no pisco term')
        self.aux.terms['pisco'].load_policy(
            {k: v.to(self.device) for k, v in actor.items()},
            {k: v.to(self.device) for k, v in focus.items()}, log_std.to(self.device))

    def reset_history(self) -> None:
        """Forget the previous step, so no loss links frames across a jump in time."""
        self._prev = None
        self.aux.reset()

    def _modules(self) -> dict[str, torch.nn.Module]:
        modules = {'encoder': self.encoder, 'aux': self.aux}
        if self.target is not None:
            modules['target'] = self.target
        if self.orthogonal is not None:
            modules['orthogonal'] = self.orthogonal
        return modules

    def architecture(self) -> dict:
        """What a checkpoint must match to be loaded into this core."""
        a = self.config.aux
        encoder = asdict(self.config.encoder)
        if encoder['fovea_stream'] == 'spatial':  # so checkpoints from before the option load
            del encoder['fovea_stream']
        if not encoder['anchored']:  # as were all encoders before the option
            del encoder['anchored']
        architecture = {'encoder': encoder, 'aux_terms': sorted(a.weights),
                        'aux_hidden': a.predictor_hidden, 'policy_actions': a.policy_actions,
                        'policy_hidden': a.policy_hidden, 'target': self.target is not None,
                        'action_dim': self.config.action_dim}
        if self.config.frozen_conv_layers:  # the optimizer holds the other layers only
            architecture['frozen_conv_layers'] = self.config.frozen_conv_layers
        return architecture

    def save(self, directory: str | Path, keep: int = 3) -> Path:
        """Write a checkpoint of weights, optimizer state and counters."""
        tensors, meta = state_tensors(self._modules(), {'adam': self.optimizer})
        tensors.update(generator_tensors(self.aux.generators()))
        meta.update(kind=CHECKPOINT_PREFIX, architecture=self.architecture(),
                    architecture_hash=config_hash(self.architecture()),
                    config=asdict(self.config), train_steps=self.train_steps,
                    counters=self._counters(), view_rng=self._view_rng.bit_generator.state)
        return save_checkpoint(directory, CHECKPOINT_PREFIX, self.train_steps, tensors, meta,
                               keep)

    def load(self, checkpoint: LoadedCheckpoint) -> None:
        """Continue from a checkpoint; ValueError says precisely what does not match."""
        # The gradient history is state, as Adam's moments are: a checkpoint without it (or
        # from before orthogonal gradients were the default) starts it empty, and one with
        # it loads into a core without them. Checkpoints once marked it as architecture.
        check_architecture(checkpoint, self.architecture(), ignored=('orthogonal_gradients',))
        modules = self._modules()
        orthogonal = modules.pop('orthogonal', None)
        restore_state(checkpoint.tensors, checkpoint.metadata, modules, {'adam': self.optimizer})
        if orthogonal is not None:
            orthogonal.restore(checkpoint.tensors, 'orthogonal.')
        for group in self.optimizer.param_groups:  # the configured rate, not the saved one
            group['lr'] = self.config.learning_rate
        restore_generators(checkpoint.tensors, self.aux.generators())
        meta = checkpoint.metadata
        self.train_steps = int(meta['train_steps'])
        counters = meta.get('counters', {})  # counters and RNG: absent from older checkpoints
        self.frames = int(counters.get('frames', 0))
        self.skipped_cadence = int(counters.get('skipped_cadence', 0))
        self.skipped_budget = int(counters.get('skipped_budget', 0))
        self.last_good.skipped = int(counters.get('skipped_nonfinite', 0))
        self.last_good.restores = int(counters.get('restores', 0))
        if 'view_rng' in meta:
            self._view_rng.bit_generator.state = meta['view_rng']
        self.last_good.snapshot()
        self.reset_history()

    def _counters(self) -> dict[str, int]:
        return {'frames': self.frames, 'skipped_cadence': self.skipped_cadence,
                'skipped_budget': self.skipped_budget,
                'skipped_nonfinite': self.last_good.skipped, 'restores': self.last_good.restores}
