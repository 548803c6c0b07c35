"""Does online training make better features than the random encoder? Measured per loss.

Each run streams N frames of a synthetic scene whose state is known through the perception
core, with actions that pan the camera and saccades that move the fovea, exactly as
perception_node would. The state (every object's position) is then read from the features by a
linear probe, fitted on even blocks of frames and scored (R²) on the odd ones:

- stream: the features as they were published while the encoder learned (what the agent saw).
  Every block starts with a cut (the objects are scattered anew), so that no block's state
  can be guessed from its neighbours' through features that merely drift with time.
- frozen: the final encoder, frozen, applied to fresh frames of the same scene, each one a
  cut of its own. Frames of a stream are alike within a block, so the stream gives the probe
  only about one independent state per block; fresh frames give it one per frame.
"""
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from perception_rl.aux_losses import AuxLossConfig
from perception_rl.bench_runs import groups, mean_std, run_jobs
from perception_rl.encoder import EncoderConfig, images_to_tensor
from perception_rl.foveation import DEFAULT_ROI_SIZE, Roi, crop_fovea, downsample_periphery
from perception_rl.online_perception import OnlinePerception, PerceptionConfig
from perception_rl.representation_health import effective_rank
from perception_rl.synthetic_scene import ALL_FAMILIES, SyntheticScene

WIDTH, HEIGHT = 640, 480
PAN_PER_RAD = 4.0
"""Pixels per frame the background pans for 1 rad/s of cmd_vel angular.z."""
BLOCK = 25
"""Frames per probe block; even blocks train the probe, odd ones test it."""
RIDGE_GRID = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5)
"""Ridge penalties the probe chooses from, on standardised features."""
CV_FOLDS = 5
"""Folds of training blocks for choosing the penalty."""
HELDOUT_FRAMES = 3000
"""Fresh frames, each a cut of its own, the final encoder is probed on."""


@dataclass(frozen=True)
class Arm:
    """One configuration of the perception core under test."""

    aux: str
    """The aux_loss spec."""
    target_decay: float = 0.0
    publish: str = 'online'
    frozen_conv_layers: int = 0
    learning_rate: float = 3e-4
    reconstruction_memory: int = 0
    reconstruction_fovea: float = AuxLossConfig.reconstruction_fovea
    orthogonal_gradient_decay: float = 0.0
    orthogonal_gradient_strength: float = 1.0
    orthogonal_gradient_baseline_decay: float = 0.0
    anchored: bool = True

    def config(self, seed: int) -> PerceptionConfig:
        return PerceptionConfig(
            encoder=replace(EncoderConfig(), anchored=self.anchored),
            aux=replace(AuxLossConfig(), spec=self.aux,
                        reconstruction_memory=self.reconstruction_memory,
                        reconstruction_fovea=self.reconstruction_fovea),
            learning_rate=self.learning_rate,
            orthogonal_gradient_decay=self.orthogonal_gradient_decay,
            orthogonal_gradient_strength=self.orthogonal_gradient_strength,
            orthogonal_gradient_baseline_decay=self.orthogonal_gradient_baseline_decay,
            target_decay=self.target_decay, publish=self.publish,
            frozen_conv_layers=self.frozen_conv_layers, seed=seed)


ARMS = {
    'frozen': Arm('none'),
    'tpc': Arm('tpc'),
    'coherence': Arm('coherence'),
    'contrastive': Arm('contrastive'),
    'vicreg': Arm('vicreg'),
    'reconstruction': Arm('reconstruction'),
    'pisco': Arm('pisco'),
    'tpc+vicreg': Arm('tpc+vicreg'),
    'coherence+vicreg': Arm('coherence+vicreg'),
    'contrastive+vicreg': Arm('contrastive+vicreg'),
    'pisco+vicreg': Arm('pisco+vicreg'),
    'reconstruction+memory': Arm('reconstruction', reconstruction_memory=32),
    'reconstruction/lr1e-4': Arm('reconstruction', learning_rate=1e-4),
    'reconstruction/lr5e-5': Arm('reconstruction', learning_rate=5e-5),
    'reconstruction/lr3e-5': Arm('reconstruction', learning_rate=3e-5),
    'reconstruction/lr1e-4/target': Arm('reconstruction', learning_rate=1e-4,
                                        target_decay=0.99, publish='target'),
    'reconstruction/lr1e-4/slow-target': Arm('reconstruction', learning_rate=1e-4,
                                             target_decay=0.999, publish='target'),
    'reconstruction/lr1e-4/fovea0.25': Arm('reconstruction', learning_rate=1e-4,
                                           reconstruction_fovea=0.25),
    'reconstruction/lr1e-4/fovea0.1': Arm('reconstruction', learning_rate=1e-4,
                                          reconstruction_fovea=0.1),
    'tpc/lr1e-4': Arm('tpc', learning_rate=1e-4),
    'reconstruction/orth': Arm('reconstruction', orthogonal_gradient_decay=0.9),
    'reconstruction/lr1e-4/orth': Arm('reconstruction', learning_rate=1e-4,
                                      orthogonal_gradient_decay=0.9),
    'reconstruction/lr1e-4/orth0.5': Arm('reconstruction', learning_rate=1e-4,
                                         orthogonal_gradient_decay=0.9,
                                         orthogonal_gradient_strength=0.5),
    'reconstruction/lr1e-4/orth0.8': Arm('reconstruction', learning_rate=1e-4,
                                         orthogonal_gradient_decay=0.9,
                                         orthogonal_gradient_strength=0.8),
    'reconstruction/lr1e-4/orth-b0.99': Arm('reconstruction', learning_rate=1e-4,
                                            orthogonal_gradient_decay=0.9,
                                            orthogonal_gradient_baseline_decay=0.99),
    'reconstruction/lr1e-4/orth-b0.999': Arm('reconstruction', learning_rate=1e-4,
                                             orthogonal_gradient_decay=0.9,
                                             orthogonal_gradient_baseline_decay=0.999),
    'frozen/unanchored': Arm('none', anchored=False),
    'reconstruction/lr1e-4/unanchored': Arm('reconstruction', learning_rate=1e-4,
                                            anchored=False),
    'reconstruction/orth/unanchored': Arm('reconstruction', orthogonal_gradient_decay=0.9,
                                          anchored=False),
    'tpc+reconstruction/lr1e-4': Arm('tpc+reconstruction', learning_rate=1e-4),
    'tpc+contrastive+vicreg': Arm('tpc+contrastive+vicreg'),
    'tpc+vicreg/target': Arm('tpc+vicreg', target_decay=0.99, publish='target'),
    'tpc+vicreg/slow-target': Arm('tpc+vicreg', target_decay=0.999, publish='target'),
    'tpc+vicreg/freeze1': Arm('tpc+vicreg', frozen_conv_layers=1),
    'tpc+vicreg/lr1e-3': Arm('tpc+vicreg', learning_rate=1e-3),
    'tpc+vicreg/lr1e-4': Arm('tpc+vicreg', learning_rate=1e-4),
}


class ScriptedActions:
    """A stand-in policy: the pan velocity wanders and the fovea saccades between objects."""

    def __init__(self, seed: int):
        self._rng = np.random.default_rng(seed)
        self.pan = 0.0
        self.centre = np.zeros(2)

    def next(self, scene: SyntheticScene) -> tuple[float, np.ndarray]:
        """(pan pixels per frame, fovea centre in [-1, 1]) for the next frame."""
        rng = self._rng
        self.pan = float(np.clip(0.95 * self.pan + rng.normal(0, 0.8), -8.0, 8.0))
        if rng.random() < 0.1:
            self.saccade(scene)
        return self.pan, np.clip(self.centre + rng.normal(0, 0.02, 2), -1, 1)

    def saccade(self, scene: SyntheticScene) -> None:
        """Move the fovea to an object 70 % of the time, anywhere otherwise."""
        rng = self._rng
        objects = scene.state()[2:].reshape(-1, 2)
        if len(objects) and rng.random() < 0.7:
            self.centre = 2.0 * objects[rng.integers(len(objects))] - 1.0
        else:
            self.centre = rng.uniform(-1, 1, 2)


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge weights and intercept on features already standardised."""
    y_mean = y.mean(axis=0)
    weights = np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T @ (y - y_mean))
    return weights, y_mean


def _r2(y: np.ndarray, predicted: np.ndarray) -> float:
    residual = ((y - predicted) ** 2).sum(axis=0)
    total = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    return float(np.mean(1.0 - residual / np.maximum(total, 1e-12)))


def probe_r2(features: np.ndarray, targets: np.ndarray, block: int = BLOCK) -> float:
    """Mean R² over target dimensions of a ridge probe trained on even blocks, tested on odd.

    The ridge penalty is chosen among RIDGE_GRID by leave-blocks-out cross-validation inside
    the training blocks, so useless features score near 0 rather than overfit below it.
    """
    blocks = np.arange(len(features)) // block
    train, test = blocks % 2 == 0, blocks % 2 == 1
    mean, std = features[train].mean(0), features[train].std(0) + 1e-6
    x, y, train_blocks = (features[train] - mean) / std, targets[train], blocks[train]
    n_folds = min(CV_FOLDS, len(np.unique(train_blocks)))
    folds = (train_blocks // 2) % n_folds
    scores = []
    for alpha in RIDGE_GRID:
        fold_scores = []
        for fold in range(n_folds):
            held = folds == fold
            weights, y_mean = _ridge(x[~held], y[~held], alpha)
            fold_scores.append(_r2(y[held], x[held] @ weights + y_mean))
        scores.append(np.mean(fold_scores))
    weights, y_mean = _ridge(x, y, RIDGE_GRID[int(np.argmax(scores))])
    return _r2(targets[test], (features[test] - mean) / std @ weights + y_mean)


def run_arm(arm_name: str, family: str, seed: int, frames: int,
            heldout: int = HELDOUT_FRAMES) -> dict:
    """Stream `frames` frames of one scene family through one arm, then probe the final
    encoder on `heldout` fresh frames; the probe's figures."""
    torch.set_num_threads(1)
    arm = ARMS[arm_name]
    config = arm.config(seed)
    core = OnlinePerception(config)
    scene = SyntheticScene(WIDTH, HEIGHT, ALL_FAMILIES[family], seed=1000 + seed)
    actions = ScriptedActions(seed)
    stream, states, step_ms = [], [], []
    for t in range(frames):
        if t % BLOCK == 0:
            scene.scatter()
        pan, centre = actions.next(scene)
        frame = scene.step(pan)
        roi = Roi.around(*centre, WIDTH, HEIGHT, DEFAULT_ROI_SIZE, DEFAULT_ROI_SIZE)
        action = np.array([0, 0, 0, 0, 0, pan / PAN_PER_RAD, *centre], np.float32)
        step = core.step(frame, roi, action)
        stream.append(step.features)
        states.append(scene.state())
        step_ms.append(step.forward_ms + step.train_ms)
    stream_arr = np.stack(stream)
    frozen, heldout_states = _heldout_features(core, scene, actions, heldout)
    r2 = {}
    for name, features, state in (('stream', stream_arr, np.stack(states)),
                                  ('frozen', frozen, heldout_states)):
        r2[f'{name}_r2'] = probe_r2(features, state)
        r2[f'{name}_r2_pan'] = probe_r2(features, state[:, :2])
        r2[f'{name}_r2_objects'] = probe_r2(features, state[:, 2:])
    return {'arm': arm_name, 'family': family, 'seed': seed, 'frames': frames,
            'aux_loss': arm.aux, **r2,
            'stream_rank': effective_rank(stream_arr[-1000:]),
            'frozen_rank': effective_rank(frozen), 'ms_per_frame': float(np.median(step_ms)),
            'train_steps': core.train_steps}


def _heldout_features(core: OnlinePerception, scene: SyntheticScene, actions: ScriptedActions,
                      count: int) -> tuple[np.ndarray, np.ndarray]:
    """The final encoder's features of `count` fresh frames, each a cut, and their states."""
    enc = core.config.encoder
    foveae, peripheries, states = [], [], []
    for _ in range(count):
        scene.scatter()
        frame = scene.step(0.0)
        actions.saccade(scene)
        roi = Roi.around(*actions.centre, WIDTH, HEIGHT, DEFAULT_ROI_SIZE, DEFAULT_ROI_SIZE)
        foveae.append(crop_fovea(frame, roi, enc.fovea_size))
        peripheries.append(downsample_periphery(frame, enc.periphery_width,
                                                enc.periphery_height))
        states.append(scene.state())
    return _encode_all(core, np.stack(foveae), np.stack(peripheries)), np.stack(states)


@torch.no_grad()
def _encode_all(core: OnlinePerception, foveae: np.ndarray, peripheries: np.ndarray,
                batch: int = 256) -> np.ndarray:
    encoder = core.target if core.config.publish == 'target' else core.encoder
    out = []
    for i in range(0, len(foveae), batch):
        out.append(encoder(images_to_tensor(foveae[i:i + batch], core.device),
                           images_to_tensor(peripheries[i:i + batch], core.device)
                           ).cpu().numpy())
    return np.concatenate(out)


def summarise(rows: list[dict]) -> str:
    """A markdown table: per family and arm, mean ± std over seeds."""
    lines = ['| family | arm | stream R² | (pan, objects) | frozen R² | (pan, objects) '
             '| eff. rank | ms/frame | seeds |',
             '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    for g in groups(rows, lambda r: (r['family'], r['arm'])):
        lines.append(
            f"| {g[0]['family']} | {g[0]['arm']} | {mean_std(g, 'stream_r2')} | "
            f"{mean_std(g, 'stream_r2_pan', 2)}, {mean_std(g, 'stream_r2_objects', 2)} | "
            f"{mean_std(g, 'frozen_r2')} | "
            f"{mean_std(g, 'frozen_r2_pan', 2)}, {mean_std(g, 'frozen_r2_objects', 2)} | "
            f"{mean_std(g, 'stream_rank', 1)} | {mean_std(g, 'ms_per_frame', 2)} | {len(g)} |")
    return '\n'.join(lines)


def check_names(arms: list[str], known_arms, families: list[str]) -> None:
    """ValueError naming every arm or scene family that does not exist, and those that do."""
    unknown = [a for a in arms if a not in known_arms] + [f for f in families
                                                          if f not in ALL_FAMILIES]
    if unknown:
        raise ValueError(f"unknown arm or family: {', '.join(unknown)} (arms: "
                         f"{', '.join(known_arms)}; families: {', '.join(ALL_FAMILIES)})")


def run_benchmark(arms: list[str], families: list[str], seeds: int, frames: int,
                  out: Path, workers: int) -> list[dict]:
    """Every arm x family x seed, `workers` at a time; results.csv and table.md in `out`."""
    check_names(arms, ARMS, families)
    jobs = [(a, f, s, frames) for f in families for s in range(seeds) for a in arms]
    return run_jobs(run_arm, jobs, out, workers, lambda row: (
        f"{row['family']:15s} {row['arm']:24s} seed {row['seed']}  "
        f"stream R² {row['stream_r2']:6.3f} (pan {row['stream_r2_pan']:6.3f}, objects "
        f"{row['stream_r2_objects']:6.3f})  frozen R² {row['frozen_r2']:6.3f} (pan "
        f"{row['frozen_r2_pan']:6.3f}, objects {row['frozen_r2_objects']:6.3f})  "
        f"rank {row['stream_rank']:5.1f}  {row['ms_per_frame']:5.2f} ms"), summarise)
