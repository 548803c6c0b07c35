"""Pretraining perception on a recording: its frames through the online perception core (the
class perception_node runs), in recorded order and as fast as the machine allows.

Each frame is seen as perception_node sees it before the agent has chosen a fovea: through the
centred fovea, with the latest recorded cmd_vel as the action. The checkpoint it writes is the
node's own kind, so perception_node starts from it (`checkpoint_dir`).
"""
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from perception_rl.aux_losses import AuxLossConfig
from perception_rl.bags import BagError, image_topic, open_bag
from perception_rl.checkpoint import resume
from perception_rl.foveation import DEFAULT_ROI_SIZE, Roi
from perception_rl.image_conversion import ImageError, compressed_to_bgr, image_to_bgr
from perception_rl.online_perception import (CHECKPOINT_PREFIX, OnlinePerception,
                                             PerceptionConfig, twist_action)
from perception_rl.scalar_log import ScalarLog

TWIST_TYPE = 'geometry_msgs/msg/Twist'
LOG_EVERY = 20
"""Train steps between TensorBoard points."""


@dataclass
class PretrainConfig:
    """What one `perception-rl pretrain` does."""

    bag: str
    """The recording: a rosbag2 directory, an .mcap or a .db3 file."""
    out: Path
    """Run directory: checkpoints/ (resumed when present) and tensorboard/."""
    topic: str = ''
    """Image topic (Image or CompressedImage); '' takes image_raw, else image_raw/compressed."""
    aux_loss: str = AuxLossConfig.spec
    """perception_node's `aux_loss`; the node must use the same one to start from the result."""
    epochs: int = 1
    """Passes over the recording."""
    learning_rate: float = PerceptionConfig.learning_rate
    seed: int = 0
    device: str = 'cpu'


def recorded_frames(reader, topic: str, rejected: list[str]
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(BGR frame, the latest cmd_vel's 6 components) for every readable frame on `topic`.

    Frames that do not decode are skipped, their reasons appended to `rejected`.
    """
    twist_topics = [c for c in reader.connections
                    if c.topic == '/cmd_vel' and c.msgtype == TWIST_TYPE]
    images = [c for c in reader.connections if c.topic == topic]
    twist = np.zeros(6, np.float32)
    for connection, _, data in reader.messages(images + twist_topics):
        msg = reader.deserialize(data, connection.msgtype)
        if connection.msgtype == TWIST_TYPE:
            twist = twist_action([msg.linear.x, msg.linear.y, msg.linear.z,
                                  msg.angular.x, msg.angular.y, msg.angular.z])
            continue
        try:
            if connection.msgtype.endswith('CompressedImage'):
                frame = compressed_to_bgr(msg.data)
            else:
                frame = image_to_bgr(msg.encoding, msg.height, msg.width, msg.step, msg.data)
        except ImageError as error:
            rejected.append(str(error))
            continue
        yield frame, twist


def pretrain(config: PretrainConfig, progress=print) -> dict:
    """Train a perception core on the recording's frames; write its checkpoint.

    :returns: frames, seconds, frames_per_s, train_steps, the mean aux loss over the first and
        last tenth of the steps, the checkpoint path, the frames rejected.
    :raises BagError: the bag is unreadable or has no such image topic.
    :raises ValueError: an invalid setting, or a checkpoint in `out` made for another
        architecture.
    """
    reader = open_bag(config.bag)
    try:
        topic = image_topic(reader, config.topic)
        if config.epochs < 1:
            raise ValueError(f'--epochs must be at least 1, not {config.epochs}')
        core = OnlinePerception(PerceptionConfig(
            aux=replace(AuxLossConfig(), spec=config.aux_loss),
            learning_rate=config.learning_rate, seed=config.seed, device=config.device))
        if not core.learns:
            raise ValueError("--aux-loss 'none' learns nothing: there is nothing to pretrain")
        checkpoints = config.out / 'checkpoints'
        for note in resume(core, checkpoints, CHECKPOINT_PREFIX):
            progress(note)
        scalars = ScalarLog(str(config.out / 'tensorboard'))
        losses: list[float] = []
        rejected: list[str] = []
        frames = 0
        start = last_report = time.perf_counter()
        try:
            for epoch in range(config.epochs):
                core.reset_history()  # the recording's end does not lead into its start
                for frame, twist in recorded_frames(reader, topic, rejected):
                    height, width = frame.shape[:2]
                    roi = Roi.centred(width, height, DEFAULT_ROI_SIZE, DEFAULT_ROI_SIZE)
                    action = np.concatenate([twist, roi.centre(width, height)])
                    step = core.step(frame, roi, action.astype(np.float32))
                    frames += 1
                    if step.loss_terms:
                        losses.append(step.loss_terms['total'])
                        if core.train_steps % LOG_EVERY == 0:
                            scalars.write({f'perception/loss_{k}': v
                                           for k, v in step.loss_terms.items()},
                                          core.train_steps)
                    now = time.perf_counter()
                    if now - last_report >= 5.0:
                        last_report = now
                        progress(f'epoch {epoch + 1}/{config.epochs}: {frames} frames, '
                                 f'{frames / (now - start):.1f} frames/s, aux loss '
                                 f'{losses[-1] if losses else float("nan"):.4f}')
        finally:  # Ctrl-C too: what was learned so far is kept
            seconds = time.perf_counter() - start
            scalars.close()
            path = core.save(checkpoints) if core.train_steps else None
    finally:
        reader.close()
    if frames == 0:
        raise BagError(f'{topic} in {config.bag} holds no readable frame'
                       + (f': {rejected[0]}' if rejected else ''))
    tenth = max(1, len(losses) // 10)
    return {'topic': topic, 'frames': frames, 'seconds': seconds,
            'frames_per_s': frames / seconds, 'train_steps': core.train_steps,
            'loss_first': float(np.mean(losses[:tenth])) if losses else float('nan'),
            'loss_last': float(np.mean(losses[-tenth:])) if losses else float('nan'),
            'checkpoint': path, 'rejected': len(rejected), 'threads': torch.get_num_threads()}
