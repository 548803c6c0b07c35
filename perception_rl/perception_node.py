"""perception_node: trains the foveated encoder on every frame, publishes detached features."""
import sys
import time
from dataclasses import replace

import numpy as np
import torch
from geometry_msgs.msg import Twist
from rclpy.node import Node
from rclpy.time import Time
from sensor_msgs.msg import Image, RegionOfInterest
from std_msgs.msg import Float32MultiArray, MultiArrayDimension

from perception_rl import qos
from perception_rl.aux_losses import AUX_LOSSES, AuxLossConfig
from perception_rl.checkpoint import resume
from perception_rl.encoder import EncoderConfig
from perception_rl.foveation import DEFAULT_ROI_SIZE, Roi
from perception_rl.health import OK, WARN, HealthPublisher
from perception_rl.image_conversion import ImageError, image_to_bgr
from perception_rl.node_main import run_node
from perception_rl.node_params import ParameterError, ParamSpec, declare_parameters
from perception_rl.online_perception import CHECKPOINT_PREFIX, OnlinePerception, PerceptionConfig
from perception_rl.scalar_log import ScalarLog
from perception_rl.timing import LatencyWindow

PARAMETERS = [
    ParamSpec('aux_loss', 'tpc', "Self-supervised loss trained on every frame; 'none' keeps "
              'the encoder frozen at its random initialisation', choices=AUX_LOSSES),
    ParamSpec('train', True, 'Train on incoming frames (false: features from the frozen '
              'current encoder)', dynamic=True),
    ParamSpec('learning_rate', 3e-4, 'Adam learning rate of the encoder', low=0.0, high=1.0),
    ParamSpec('seed', 0, 'Seed of the initial weights', low=0, high=2**31 - 1),
    ParamSpec('fovea_size', 48, 'Side in pixels of the fovea crop given to the CNN',
              low=8, high=256),
    ParamSpec('periphery_width', 64, 'Width of the downsampled periphery', low=8, high=512),
    ParamSpec('periphery_height', 48, 'Height of the downsampled periphery', low=8, high=512),
    ParamSpec('device', 'cpu', 'Torch device', choices=('cpu', 'cuda', 'auto')),
    ParamSpec('checkpoint_dir', '', 'Directory to resume from and save checkpoints to '
              "('' for none)"),
    ParamSpec('checkpoint_period', 300.0, 'Seconds between periodic checkpoints',
              low=1.0, high=86400.0),
    ParamSpec('log_dir', '', "TensorBoard directory ('' for none)"),
]
ACTION_LIMIT = 5.0
"""cmd_vel components are clipped to +-this before perception conditions on them."""


class PerceptionNode(Node):
    """image_raw (+ focus_roi, cmd_vel) -> one training step -> features."""

    def __init__(self, **kwargs):
        super().__init__('perception_node', **kwargs)
        p = declare_parameters(self, PARAMETERS, on_change=self._on_change)
        torch.set_num_threads(1)  # one thread per node: two threads and a busy neighbour
        #                           pushed the training step's p99 to 120 ms (issue 5 facts)
        config = PerceptionConfig(
            encoder=replace(EncoderConfig(), fovea_size=p['fovea_size'],
                            periphery_width=p['periphery_width'],
                            periphery_height=p['periphery_height']),
            aux=replace(AuxLossConfig(), kind=p['aux_loss']),
            learning_rate=p['learning_rate'], seed=p['seed'], device=p['device'])
        try:
            self.core = OnlinePerception(config)
        except ValueError as error:
            raise ParameterError(f"parameter 'device': {error}") from None
        self.core.training = p['train']
        self._p = p
        if p['checkpoint_dir']:
            try:
                for note in resume(self.core, p['checkpoint_dir'], CHECKPOINT_PREFIX):
                    self.get_logger().info(note)
            except ValueError as error:
                raise ParameterError(f"parameter 'checkpoint_dir': {error}") from None
            self.create_timer(p['checkpoint_period'], self._save_checkpoint)
        self._scalars = ScalarLog(p['log_dir'])
        self._roi: RegionOfInterest | None = None
        self._twist = np.zeros(6, np.float32)
        self._last_stamp: Time | None = None
        self.frames = 0
        self.rejected = 0
        self.time_jumps = 0
        self.last_loss = float('nan')
        self._loss_sums: dict[str, float] = {}
        self._loss_count = 0
        self._tick = LatencyWindow()
        self._forward = LatencyWindow()
        self._train = LatencyWindow()
        self._publisher = self.create_publisher(
            Float32MultiArray, 'features', qos.FEATURES, qos_overriding_options=qos.overridable())
        self.create_subscription(Image, 'image_raw', self._on_image, qos.IMAGES,
                                 qos_overriding_options=qos.overridable())
        self.create_subscription(RegionOfInterest, 'focus_roi', self._on_roi, qos.LATEST)
        self.create_subscription(Twist, 'cmd_vel', self._on_twist, qos.LATEST)
        self._health = HealthPublisher(self, self._report)
        self.get_logger().info(
            f"aux_loss={p['aux_loss']} train={p['train']} lr={p['learning_rate']} "
            f"device={self.core.device} fovea={p['fovea_size']} "
            f"periphery={p['periphery_width']}x{p['periphery_height']}")

    def _on_change(self, name, value) -> None:
        if name == 'train':
            self.core.training = value
            self.get_logger().info(f'training {"resumed" if value else "paused"}')

    def _on_roi(self, msg: RegionOfInterest) -> None:
        self._roi = msg

    def _on_twist(self, msg: Twist) -> None:
        values = [msg.linear.x, msg.linear.y, msg.linear.z,
                  msg.angular.x, msg.angular.y, msg.angular.z]
        self._twist = np.clip(np.nan_to_num(np.array(values, np.float32), nan=0.0,
                                            posinf=0.0, neginf=0.0), -ACTION_LIMIT, ACTION_LIMIT)

    def _current_roi(self, width: int, height: int) -> Roi:
        roi = self._roi
        if roi is None:
            return Roi.centred(width, height, DEFAULT_ROI_SIZE, DEFAULT_ROI_SIZE)
        if roi.width == 0 or roi.height == 0:  # sensor_msgs: a zero size means the whole frame
            return Roi(0, 0, width, height)
        return Roi(roi.x_offset, roi.y_offset, roi.width, roi.height).clipped_to(width, height)

    def _on_image(self, msg: Image) -> None:
        start = time.perf_counter()
        try:
            frame = image_to_bgr(msg.encoding, msg.height, msg.width, msg.step, msg.data)
        except ImageError as error:
            self.rejected += 1
            self.get_logger().warning(f'image rejected: {error}', throttle_duration_sec=5.0)
            return
        stamp = Time.from_msg(msg.header.stamp)
        if self._last_stamp is not None and stamp < self._last_stamp:
            self.time_jumps += 1  # a looping bag or a restarted clock: no loss across the jump
            self.core.reset_history()
        self._last_stamp = stamp
        height, width = frame.shape[:2]
        roi = self._current_roi(width, height)
        action = np.concatenate([self._twist, roi.centre(width, height)]).astype(np.float32)
        step = self.core.step(frame, roi, action)
        out = Float32MultiArray()
        out.layout.dim = [MultiArrayDimension(label='features', size=step.features.size,
                                              stride=step.features.size)]
        out.data = step.features.tolist()
        self._publisher.publish(out)
        self.frames += 1
        for key, value in step.loss_terms.items():
            self._loss_sums[key] = self._loss_sums.get(key, 0.0) + value
        self._loss_count += bool(step.loss_terms)
        if step.loss_terms:
            self.last_loss = step.loss_terms['total']
        self._forward.add(step.forward_ms)
        if step.trained:
            self._train.add(step.train_ms)
        self._tick.add(1e3 * (time.perf_counter() - start))

    def _report(self):
        losses = {k: v / max(self._loss_count, 1) for k, v in self._loss_sums.items()}
        self._loss_sums, self._loss_count = {}, 0
        self._scalars.write({f'perception/{k}': v for k, v in losses.items()},
                            self.core.train_steps)
        tick, forward, train = self._tick.summary(), self._forward.summary(), self._train.summary()
        values = {'frames': self.frames, 'train_steps': self.core.train_steps,
                  'training': self.core.training and self.core.learns,
                  'aux_loss': losses.get('total', float('nan')),
                  **{f'aux_{k}': v for k, v in losses.items() if k != 'total'},
                  'tick_ms_p50': tick['p50'], 'tick_ms_p99': tick['p99'],
                  'forward_ms_p50': forward['p50'], 'train_ms_p50': train['p50'],
                  'train_ms_p99': train['p99'], 'images_rejected': self.rejected,
                  'nonfinite_steps_skipped': self.core.skipped_nonfinite,
                  'time_jumps': self.time_jumps}
        level = OK if self.frames else WARN
        return level, 'ok' if self.frames else 'no frames yet', values

    def _save_checkpoint(self) -> None:
        try:
            path = self.core.save(self._p['checkpoint_dir'])
            self.get_logger().info(f'checkpoint {path}')
        except (OSError, ValueError) as error:
            self.get_logger().error(f'checkpoint not saved: {error}')

    def shutdown(self) -> None:
        if self._p['checkpoint_dir']:
            self._save_checkpoint()
        self._scalars.close()


def main(args=None):
    sys.exit(run_node(PerceptionNode, args))


if __name__ == '__main__':
    main()
