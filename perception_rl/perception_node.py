"""perception_node: trains the foveated encoder on every frame, publishes detached features."""
import sys
import time
from collections import deque
from dataclasses import replace

import numpy as np
import torch
from geometry_msgs.msg import Twist
from rclpy.node import Node
from rclpy.time import Time
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Float32MultiArray, MultiArrayDimension

from perception_rl import qos
from perception_rl.aux_losses import AuxLossConfig, parse_aux_loss
from perception_rl.checkpoint import resume
from perception_rl.devices import DEVICES, available_device
from perception_rl.encoder import FOVEA_STREAMS, EncoderConfig
from perception_rl.fovea_detail_topic import fovea_detail_message
from perception_rl.foveation import DEFAULT_ROI_SIZE, Roi
from perception_rl.health import OK, WARN, HealthPublisher
from perception_rl.image_conversion import ImageError, compressed_to_bgr, image_to_bgr
from perception_rl.node_main import run_node
from perception_rl.node_params import ParameterError, ParamSpec, declare_parameters
from perception_rl.online_perception import (CHECKPOINT_PREFIX, PUBLISHED, OnlinePerception,
                                             PerceptionConfig, twist_action)
from perception_rl.policy_weights import unflatten_policy
from perception_rl.representation_health import RepresentationHealth
from perception_rl.scalar_log import ScalarLog
from perception_rl.timing import FrameTrace, LatencyWindow

PARAMETERS = [
    ParamSpec('aux_loss', AuxLossConfig.spec, 'Self-supervised losses trained online, joined '
              "by '+' and weighted by ':' (tpc, coherence, contrastive, vicreg, reconstruction, "
              "pisco; e.g. 'tpc+vicreg:0.5'); 'none' keeps the encoder at its random "
              'initialisation', check=parse_aux_loss),
    ParamSpec('reconstruction_memory', 0, 'Frames (their fovea and periphery views) the '
              'reconstruction loss keeps and replays, one per tick; 0 stores no frames',
              low=0, high=1024),
    ParamSpec('reconstruction_fovea', AuxLossConfig.reconstruction_fovea, 'Weight of '
              'redrawing the fovea view in the reconstruction loss, against 1 for the '
              'periphery; 0 redraws the periphery only (0.1 or more keeps fine foveal detail '
              'in the features)', low=0.0, high=100.0),
    ParamSpec('policy_actions', 2, "pisco: how many Twist components the agent controls (its "
              "'controlled_axes')", low=1, high=6),
    ParamSpec('train', True, 'Train on incoming frames (false: features from the frozen '
              'current encoder)', dynamic=True),
    ParamSpec('train_every', 1, 'Train on one frame in this many', low=1, high=1000,
              dynamic=True),
    ParamSpec('train_budget_ms', 15.0, 'Skip training on a frame whose lateness plus the '
              'expected trained tick would pass this many ms (0: never skip)', low=0.0,
              high=1000.0, dynamic=True),
    ParamSpec('learning_rate', PerceptionConfig.learning_rate, 'Adam learning rate of the '
              'encoder', low=0.0, high=1.0),
    ParamSpec('orthogonal_gradient_decay', PerceptionConfig.orthogonal_gradient_decay,
              "Per-step decay of the gradient history each step's gradient is made orthogonal "
              'to (0: Adam gets the gradients as they are)', low=0.0, high=0.999),
    ParamSpec('orthogonal_gradient_strength', PerceptionConfig.orthogonal_gradient_strength,
              "Share of each gradient's component along that history which is removed",
              low=0.01, high=1.0),
    ParamSpec('orthogonal_gradient_baseline_decay',
              PerceptionConfig.orthogonal_gradient_baseline_decay,
              'Per-step decay of a slow gradient average the projection leaves in: only the '
              "history's part beyond it is removed (0: none)", low=0.0, high=0.9999),
    ParamSpec('target_decay', 0.0, 'Per-step decay of the EMA target encoder (0: none)',
              low=0.0, high=0.9999),
    ParamSpec('publish', 'online', "Publish the learning encoder's features or the slow EMA "
              "target's ('target' needs target_decay > 0)", choices=PUBLISHED),
    ParamSpec('frozen_conv_layers', 0, 'Bottom convolutions of each stream kept at their '
              'initial weights', low=0, high=3),
    ParamSpec('seed', 0, 'Seed of the initial weights', low=0, high=2**31 - 1),
    ParamSpec('fovea_size', 48, 'Side in pixels of the fovea crop given to the CNN',
              low=8, high=256),
    ParamSpec('fovea_stream', EncoderConfig.fovea_stream, "How the fovea stream summarises "
              "its view: 'spatial' keeps where in the fovea things are, 'pooled' reads a "
              'detail the same anywhere in it', choices=FOVEA_STREAMS),
    ParamSpec('anchored', EncoderConfig.anchored, 'Features relative to those of the first '
              'views the encoder saw, kept in its checkpoints (false: as before the option)'),
    ParamSpec('publish_fovea_detail', False, 'Before each features message, publish on '
              'fovea_detail the centre (x, y in [-1, 1]) of the fovea its frame was seen '
              'through and the detail the fovea saw there beyond the periphery, for an agent '
              "whose focus_reward is 'detail' (about 0.1 ms a frame)"),
    ParamSpec('periphery_width', 64, 'Width of the downsampled periphery', low=8, high=512),
    ParamSpec('periphery_height', 48, 'Height of the downsampled periphery', low=8, high=512),
    ParamSpec('device', 'cpu', "Torch device of the encoder ('cuda' falls back to 'cpu' with "
              'a warning where there is no GPU)', choices=DEVICES),
    ParamSpec('checkpoint_dir', '', 'Directory to resume from and save checkpoints to '
              "('' for none)"),
    ParamSpec('checkpoint_period', 300.0, 'Seconds between periodic checkpoints',
              low=1.0, high=86400.0),
    ParamSpec('log_dir', '', "TensorBoard directory ('' for none)"),
    ParamSpec('trace_file', '', "CSV of each frame's timestamps and stage times, for "
              "perception-rl bench ('' for none)"),
]
TRACE_FIELDS = ('stamp_ns', 'start_ns', 'forward_ms', 'train_ms', 'trained', 'features_seq',
                'publish_ns', 'end_ns')


class PerceptionNode(Node):
    """image_raw (+ focus_roi, cmd_vel) -> one training step -> features."""

    def __init__(self, **kwargs):
        super().__init__('perception_node', **kwargs)
        p = declare_parameters(self, PARAMETERS, on_change=self._on_change)
        torch.set_num_threads(1)  # one thread per node: two threads and a busy neighbour
        #                           pushed the training step's p99 to 120 ms (issue 5 facts)
        config = PerceptionConfig(
            encoder=replace(EncoderConfig(), fovea_size=p['fovea_size'],
                            fovea_stream=p['fovea_stream'], anchored=p['anchored'],
                            periphery_width=p['periphery_width'],
                            periphery_height=p['periphery_height']),
            aux=replace(AuxLossConfig(), spec=p['aux_loss'],
                        reconstruction_memory=p['reconstruction_memory'],
                        reconstruction_fovea=p['reconstruction_fovea'],
                        policy_actions=p['policy_actions']),
            learning_rate=p['learning_rate'],
            orthogonal_gradient_decay=p['orthogonal_gradient_decay'],
            orthogonal_gradient_strength=p['orthogonal_gradient_strength'],
            orthogonal_gradient_baseline_decay=p['orthogonal_gradient_baseline_decay'],
            target_decay=p['target_decay'],
            publish=p['publish'], frozen_conv_layers=p['frozen_conv_layers'],
            train_every=p['train_every'], train_budget_ms=p['train_budget_ms'],
            seed=p['seed'], device=available_device(p['device'], self.get_logger()))
        try:
            self.core = OnlinePerception(config)
        except ValueError as error:  # publish 'target' without a target
            raise ParameterError(f'invalid parameters: {error}') from None
        self.core.training = p['train']
        self._p = p
        if p['checkpoint_dir']:
            try:
                note, unreadable = resume(self.core, p['checkpoint_dir'], CHECKPOINT_PREFIX)
                (self.get_logger().warning if unreadable else self.get_logger().info)(note)
            except ValueError as error:
                raise ParameterError(f"parameter 'checkpoint_dir': {error}") from None
            self.create_timer(p['checkpoint_period'], self._save_checkpoint)
        self._scalars = ScalarLog(p['log_dir'])
        self._roi: RegionOfInterest | None = None
        self._twist = np.zeros(6, np.float32)
        self._last_stamp: Time | None = None
        self._last_compressed: bool | None = None  # whether the last frame came compressed
        self.frames = 0
        self.rejected = 0
        self.rejected_by: dict[str, int] = {}  # by ImageError.reason, or 'stamp'
        self.time_jumps = 0
        self.rois_out_of_range = 0
        self.frames_failed = 0
        self.twists_non_finite = 0
        self._frame_size: tuple[int, int] | None = None
        self.last_loss = float('nan')
        self._loss_sums: dict[str, float] = {}
        self._loss_count = 0
        self._tick = LatencyWindow()
        self._forward = LatencyWindow()
        self._train = LatencyWindow()
        self._ages: deque[float] = deque(maxlen=200)
        self._lateness = LatencyWindow()
        self._representation = RepresentationHealth()
        self._trace = FrameTrace(p['trace_file'], TRACE_FIELDS) if p['trace_file'] else None
        self.policies_received = 0
        self.policies_rejected = 0
        # Published first, one per features message, so that the two share DDS sequence
        # numbers: the agent pairs them by that.
        self._detail_publisher = (self.create_publisher(Float32MultiArray, 'fovea_detail',
                                                        qos.FEATURES)
                                  if p['publish_fovea_detail'] else None)
        self._publisher = self.create_publisher(
            Float32MultiArray, 'features', qos.FEATURES, qos_overriding_options=qos.overridable())
        self.create_subscription(Image, 'image_raw', self._on_image, qos.IMAGES,
                                 qos_overriding_options=qos.overridable())
        # Recorded bags often hold image_transport's compressed stream instead of raw frames.
        self.create_subscription(CompressedImage, 'image_raw/compressed', self._on_compressed,
                                 qos.IMAGES, qos_overriding_options=qos.overridable())
        self.create_subscription(RegionOfInterest, 'focus_roi', self._on_roi, qos.LATEST)
        self.create_subscription(Twist, 'cmd_vel', self._on_twist, qos.LATEST)
        if 'pisco' in self.core.aux.terms:
            self.create_subscription(Float32MultiArray, 'policy_weights', self._on_policy,
                                     qos.POLICY)
        self._health = HealthPublisher(self, self._report)
        if 'reconstruction' in self.core.aux.terms and p['reconstruction_memory'] > 0:
            self.get_logger().info(
                f"reconstruction stores up to {p['reconstruction_memory']} frames (their "
                f"{p['fovea_size']}x{p['fovea_size']} fovea and {p['periphery_width']}x"
                f"{p['periphery_height']} periphery views) in memory and replays them")
        self.get_logger().info(
            f"aux_loss={p['aux_loss']} train={p['train']} lr={p['learning_rate']} "
            f"publish={p['publish']} train_every={p['train_every']} "
            f"budget={p['train_budget_ms']} ms device={self.core.device} fovea={p['fovea_size']} "
            f"periphery={p['periphery_width']}x{p['periphery_height']}")

    def _on_change(self, name, value) -> None:
        if name == 'train':
            self.core.training = value
            self.get_logger().info(f'training {"resumed" if value else "paused"}')
        elif name in ('train_every', 'train_budget_ms'):
            self.core.config = replace(self.core.config, **{name: value})

    def _on_policy(self, msg: Float32MultiArray) -> None:
        try:
            self.core.load_policy(*unflatten_policy(
                [(d.label, d.size) for d in msg.layout.dim], msg.data))
        except ValueError as error:
            self.policies_rejected += 1
            self.get_logger().warning(f'policy_weights rejected, pisco keeps the previous '
                                      f'policy: {error}', throttle_duration_sec=5.0)
            return
        self.policies_received += 1

    def _on_roi(self, msg: RegionOfInterest) -> None:
        self._roi = msg
        if self._frame_size is not None:
            width, height = self._frame_size
            if msg.x_offset + msg.width > width or msg.y_offset + msg.height > height:
                self.rois_out_of_range += 1
                self.get_logger().warning(
                    f'focus_roi {msg.x_offset},{msg.y_offset} {msg.width}x{msg.height} reaches '
                    f'outside the {width}x{height} frame: clipped to it',
                    throttle_duration_sec=5.0)

    def _on_twist(self, msg: Twist) -> None:
        values = [msg.linear.x, msg.linear.y, msg.linear.z,
                  msg.angular.x, msg.angular.y, msg.angular.z]
        if not np.isfinite(values).all():
            self.twists_non_finite += 1
        self._twist = twist_action(values)

    def _current_roi(self, width: int, height: int) -> Roi:
        roi = self._roi
        if roi is None:
            return Roi.centred(width, height, DEFAULT_ROI_SIZE, DEFAULT_ROI_SIZE)
        if roi.width == 0 or roi.height == 0:  # sensor_msgs: a zero size means the whole frame
            return Roi(0, 0, width, height)
        return Roi(roi.x_offset, roi.y_offset, roi.width, roi.height).clipped_to(width, height)

    def _on_image(self, msg: Image) -> None:
        start = time.perf_counter()
        start_ns = time.time_ns()
        try:
            frame = image_to_bgr(msg.encoding, msg.height, msg.width, msg.step, msg.data)
        except ImageError as error:
            self._reject(error.reason, str(error))
            return
        self._on_frame(frame, msg.header.stamp, (start, start_ns), compressed=False)

    def _on_compressed(self, msg: CompressedImage) -> None:
        start = time.perf_counter()
        start_ns = time.time_ns()
        try:
            frame = compressed_to_bgr(msg.data)
        except ImageError as error:
            self._reject(error.reason, f'compressed: {error}')
            return
        self._on_frame(frame, msg.header.stamp, (start, start_ns), compressed=True)

    def _on_frame(self, frame: np.ndarray, header_stamp, started: tuple[float, int],
                  compressed: bool) -> None:
        """One decoded frame; `started`: when its callback began (perf_counter, time_ns)."""
        start, start_ns = started
        try:
            stamp = Time.from_msg(header_stamp)
        except ValueError as error:  # negative seconds
            self._reject('stamp', f'header stamp {header_stamp.sec} s: {error}')
            return
        if (self._last_stamp is not None and stamp == self._last_stamp
                and compressed != self._last_compressed):
            return  # the frame just seen, through the other transport (a bag holding both)
        self._last_compressed = compressed
        if self._last_stamp is not None and stamp < self._last_stamp:
            self.time_jumps += 1  # a looping bag or a restarted clock: no loss across the jump
            self.core.reset_history()
            self._ages.clear()
        self._last_stamp = stamp
        height, width = frame.shape[:2]
        self._frame_size = (width, height)
        roi = self._current_roi(width, height)
        centre = roi.centre(width, height)
        action = np.concatenate([self._twist, centre]).astype(np.float32)
        try:
            step = self.core.step(frame, roi, action, self._lateness_ms(stamp),
                                  detail=self._detail_publisher is not None)
        except Exception as error:  # noqa: BLE001 -- one frame must not take perception down
            self.frames_failed += 1
            self.get_logger().error(f'frame {width}x{height} not processed: {error!r}',
                                    throttle_duration_sec=5.0)
            return
        out = Float32MultiArray()
        out.layout.dim = [MultiArrayDimension(label='features', size=step.features.size,
                                              stride=step.features.size)]
        out.data = step.features.tolist()
        if self._detail_publisher is not None:
            self._detail_publisher.publish(fovea_detail_message(
                centre, float(step.fovea_detail[0])))
        publish_ns = time.time_ns()
        self._publisher.publish(out)
        self._representation.add(step.features)
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
        if self._trace is not None:  # features_seq: this publisher's DDS sequence number
            self._trace.row(stamp.nanoseconds, start_ns, step.forward_ms, step.train_ms,
                            step.trained, self.frames, publish_ns, time.time_ns())

    def _reject(self, reason: str, why: str) -> None:
        self.rejected += 1
        self.rejected_by[reason] = self.rejected_by.get(reason, 0) + 1
        self.get_logger().warning(f'image rejected: {why}', throttle_duration_sec=5.0)

    def _lateness_ms(self, stamp: Time) -> float:
        """How much later than usual this frame arrived: its age minus the smallest recent
        age, so a constant offset between the camera's clock and ours does not count."""
        age = (self.get_clock().now() - stamp).nanoseconds / 1e6
        self._ages.append(age)
        lateness = max(0.0, age - min(self._ages))
        self._lateness.add(lateness)
        return lateness

    def _report(self):
        losses = {k: v / max(self._loss_count, 1) for k, v in self._loss_sums.items()}
        self._loss_sums, self._loss_count = {}, 0
        health = self._representation.summary(self.core.reference_features(), time.monotonic())
        self._scalars.write({**{f'perception/loss_{k}': v for k, v in losses.items()},
                             **{f'perception/{k}': v for k, v in health.items()}},
                            self.core.train_steps)
        tick, forward, train = self._tick.summary(), self._forward.summary(), self._train.summary()
        lateness = self._lateness.summary()
        values = {'frames': self.frames, 'train_steps': self.core.train_steps,
                  'training': self.core.training and self.core.learns,
                  'aux_loss': losses.get('total', float('nan')),
                  **{f'aux_{k}': v for k, v in losses.items() if k != 'total'},
                  'tick_ms_p50': tick['p50'], 'tick_ms_p99': tick['p99'],
                  'forward_ms_p50': forward['p50'], 'train_ms_p50': train['p50'],
                  'train_ms_p99': train['p99'], 'images_rejected': self.rejected,
                  **{f'images_rejected_{k}': v for k, v in self.rejected_by.items()},
                  'rois_out_of_range': self.rois_out_of_range,
                  'frames_failed': self.frames_failed,
                  'cmd_vel_non_finite': self.twists_non_finite,
                  'nonfinite_steps_skipped': self.core.skipped_nonfinite,
                  'weights_restored': self.core.last_good.restores,
                  'train_skipped_cadence': self.core.skipped_cadence,
                  'train_skipped_budget': self.core.skipped_budget,
                  'lateness_ms_p50': lateness['p50'], 'lateness_ms_p99': lateness['p99'],
                  **health, 'time_jumps': self.time_jumps}
        if 'pisco' in self.core.aux.terms:
            values.update(policies_received=self.policies_received,
                          policies_rejected=self.policies_rejected)
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
        if self._trace is not None:
            self._trace.close()


def main(args=None):
    sys.exit(run_node(PerceptionNode, args))


if __name__ == '__main__':
    main()
