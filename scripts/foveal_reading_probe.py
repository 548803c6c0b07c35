"""Can a linear probe read the foveation task's stripes from the features, off the fovea's centre?

    .venv/bin/python scripts/foveal_reading_probe.py [--fovea-stream spatial|pooled]
        [--checkpoints RUN/checkpoints --aux-loss SPEC --reconstruction-fovea W
     --frozen-conv-layers N]

Draws frames of perception_rl/Foveation-v1 with the fovea placed so that the striped patch's
centre lies up to OFFSET pixels from the fovea's centre along each axis, encodes them (the
random encoder, or the newest perception checkpoint of a `perception-rl train` run on that
task), and prints, per offset, how often a ridge classifier fitted on 700 frames tells the
stripes' orientation right on 300 others (the best of five ridge penalties).
"""
import argparse
from dataclasses import replace

import numpy as np
import torch

from perception_rl.aux_losses import AuxLossConfig
from perception_rl.checkpoint import load_latest
from perception_rl.encoder import FOVEA_STREAMS, EncoderConfig, images_to_tensor
from perception_rl.foveation import Roi, crop_fovea, downsample_periphery
from perception_rl.online_perception import OnlinePerception, PerceptionConfig
from perception_rl.visual_tasks import PATCH, FoveationTask

FRAMES, TRAIN = 1000, 700
OFFSETS = (0, 4, 8, 12, 16)


def views(offset: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fovea and periphery views of FRAMES frames (a new episode every 5), and the answers."""
    task, rng = FoveationTask(), np.random.default_rng(seed)
    foveae, peripheries, vertical = [], [], []
    side = EncoderConfig.fovea_size
    for i in range(FRAMES):
        if i % 5 == 0:
            task.reset(seed=int(rng.integers(2**31)))
        frame = task._draw_stripes()
        x, y = task._patch
        dx, dy = rng.integers(-offset, offset + 1, 2)
        roi = Roi(int(x + PATCH // 2 + dx - side // 2), int(y + PATCH // 2 + dy - side // 2),
                  side, side)
        foveae.append(crop_fovea(frame, roi, side))
        peripheries.append(downsample_periphery(frame, EncoderConfig.periphery_width,
                                                EncoderConfig.periphery_height))
        vertical.append(task.vertical)
    return np.stack(foveae), np.stack(peripheries), np.array(vertical)


def probe_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Share of the held-out frames whose orientation a ridge classifier tells right."""
    x = (features - features[:TRAIN].mean(0)) / (features[:TRAIN].std(0) + 1e-6)
    x = np.c_[x, np.ones(len(x))]
    target = labels[:TRAIN] * 2.0 - 1.0
    best = 0.0
    for penalty in (1e-2, 1e-1, 1.0, 10.0, 100.0):
        weights = np.linalg.solve(x[:TRAIN].T @ x[:TRAIN] + penalty * np.eye(x.shape[1]),
                                  x[:TRAIN].T @ target)
        best = max(best, float(((x[TRAIN:] @ weights > 0) == labels[TRAIN:]).mean()))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--fovea-stream', default=EncoderConfig.fovea_stream,
                        choices=FOVEA_STREAMS)
    parser.add_argument('--checkpoints', default='',
                        help="a run's checkpoints directory ('': the random encoder)")
    parser.add_argument('--aux-loss', default=AuxLossConfig.spec)
    parser.add_argument('--reconstruction-fovea', type=float, default=0.0)
    parser.add_argument('--frozen-conv-layers', type=int, default=0,
                        help="the run's --frozen-conv-layers")
    parser.add_argument('--seed', type=int, default=0, help='seed of the random encoder')
    args = parser.parse_args()
    torch.set_num_threads(1)
    core = OnlinePerception(PerceptionConfig(
        encoder=replace(EncoderConfig(), fovea_stream=args.fovea_stream),
        aux=replace(AuxLossConfig(), spec=args.aux_loss, policy_actions=2,
                    reconstruction_fovea=args.reconstruction_fovea),
        action_dim=4, frozen_conv_layers=args.frozen_conv_layers, seed=args.seed))  # the task's 2 actions and the fovea's centre
    if args.checkpoints:
        checkpoint, _ = load_latest(args.checkpoints, 'perception')
        if checkpoint is None:
            raise SystemExit(f'no perception checkpoint in {args.checkpoints}')
        core.load(checkpoint)
    encoder, cpu = core.encoder.eval(), torch.device('cpu')
    print('offset (px)  right')
    for offset in OFFSETS:
        foveae, peripheries, labels = views(offset, seed=1)
        with torch.no_grad():
            features = encoder(images_to_tensor(foveae, cpu),
                               images_to_tensor(peripheries, cpu)).numpy()
        print(f'{offset:11d}  {probe_accuracy(features, labels):.2f}')


if __name__ == '__main__':
    main()
