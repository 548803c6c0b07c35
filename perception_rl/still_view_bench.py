"""Does the encoder keep learning on a view that changes slowly? The loss on a still camera.

A webcam on a desk sees nearly the same frame for hours. Orthogonal gradients
(perception_rl/orthogonal_gradients.py) remove from each gradient its part along the recent
ones, and on such a view consecutive gradients agree, so they can remove nearly all of it.
Per arm, scene family and seed, with the fovea fixed at the centre and no actions:

- still: `frames` frames of one scene without cuts, panning at the scene's own 2 px/frame;
  the mean loss of the first WINDOW trained frames against the last WINDOW;
- repeat: the first WINDOW of those frames `passes` times over, in order, in a fresh core;
  the mean loss of the first pass against the last.

The figures are how much the loss fell (1 - last / first).
"""
from pathlib import Path

import numpy as np
import torch

from perception_rl.bench_runs import groups, mean_std, run_jobs
from perception_rl.foveation import DEFAULT_ROI_SIZE, Roi
from perception_rl.online_perception import ACTION_DIM, OnlinePerception
from perception_rl.representation_bench import ARMS, HEIGHT, WIDTH, check_names
from perception_rl.synthetic_scene import ALL_FAMILIES, SyntheticScene

WINDOW = 100
"""Trained frames whose loss is averaged at each end."""
LOSS_ARMS = {name: arm for name, arm in ARMS.items() if arm.aux != 'none'}
"""representation_bench's arms that train (the others have no loss to follow)."""


def _losses(arm_name: str, seed: int, frames: list[np.ndarray]) -> list[float]:
    """The total auxiliary loss of every trained frame, streaming `frames` through a fresh
    core of the arm."""
    core = OnlinePerception(ARMS[arm_name].config(seed))
    roi = Roi.centred(WIDTH, HEIGHT, DEFAULT_ROI_SIZE, DEFAULT_ROI_SIZE)
    action = np.zeros(ACTION_DIM, np.float32)
    steps = [core.step(frame, roi, action) for frame in frames]
    return [step.loss_terms['total'] for step in steps if step.trained]


def run_arm(arm_name: str, family: str, seed: int, frames: int, passes: int) -> dict:
    """Both streams for one arm, family and seed; the loss at each end and how much it fell."""
    torch.set_num_threads(1)
    scene = SyntheticScene(WIDTH, HEIGHT, ALL_FAMILIES[family], seed=1000 + seed)
    still = [scene.step() for _ in range(frames)]
    still_losses = _losses(arm_name, seed, still)
    repeat_losses = _losses(arm_name, seed, still[:WINDOW] * passes)
    first_pass, last_pass = repeat_losses[:WINDOW - 1], repeat_losses[-WINDOW:]
    row = {'arm': arm_name, 'family': family, 'seed': seed, 'frames': frames, 'passes': passes,
           'still_first': np.mean(still_losses[:WINDOW]),
           'still_last': np.mean(still_losses[-WINDOW:]),
           'repeat_first': np.mean(first_pass), 'repeat_last': np.mean(last_pass)}
    row['still_fall'] = 1.0 - row['still_last'] / row['still_first']
    row['repeat_fall'] = 1.0 - row['repeat_last'] / row['repeat_first']
    return {name: float(value) if isinstance(value, np.floating) else value
            for name, value in row.items()}


def summarise(rows: list[dict]) -> str:
    """A markdown table: per family and arm, mean ± std over seeds of how much the loss fell."""
    lines = ['| family | arm | still: loss first → last | fall | repeat: first → last pass '
             '| fall | seeds |', '| --- | --- | --- | --- | --- | --- | --- |']
    for g in groups(rows, lambda r: (r['family'], r['arm'])):
        lines.append(
            f"| {g[0]['family']} | {g[0]['arm']} | {mean_std(g, 'still_first', 4)} → "
            f"{mean_std(g, 'still_last', 4)} | {mean_std(g, 'still_fall')} | "
            f"{mean_std(g, 'repeat_first', 4)} → {mean_std(g, 'repeat_last', 4)} | "
            f"{mean_std(g, 'repeat_fall')} | {len(g)} |")
    return '\n'.join(lines)


def run_benchmark(arms: list[str], families: list[str], seeds: int, frames: int, passes: int,
                  out: Path, workers: int) -> list[dict]:
    """Every arm x family x seed, `workers` at a time; results.csv and table.md in `out`."""
    check_names(arms, LOSS_ARMS, families)
    if frames < 2 * WINDOW or passes < 2:
        raise ValueError(f'--frames must be at least {2 * WINDOW} and --passes at least 2')
    jobs = [(a, f, s, frames, passes) for f in families for s in range(seeds) for a in arms]
    return run_jobs(run_arm, jobs, out, workers, lambda row: (
        f"{row['family']:15s} {row['arm']:30s} seed {row['seed']}  still "
        f"{row['still_first']:.4f} -> {row['still_last']:.4f} ({100 * row['still_fall']:+.1f} "
        f"%)  repeat {row['repeat_first']:.4f} -> {row['repeat_last']:.4f} "
        f"({100 * row['repeat_fall']:+.1f} %)"), summarise)
