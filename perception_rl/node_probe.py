"""The representation probe through perception_node itself: frames in on image_raw, actions on
cmd_vel and focus_roi, features out, `train` switched off for the held-out part.

representation_bench runs the perception core inside its own process. This runs the real
node as an OS process over DDS, as a robot would, with the same scenes, scripted actions and
probe, so that what the node adds (message conversion, QoS, the ROI and cmd_vel it conditions
on, its training budget, the `train` switch) is inside the measurement. For a given seed the
node sees the frames and actions the core does in `representation_bench.run_arm`.

Lock-step: each frame is published once the features of the one before have come back, so no
frame is dropped and a run is as fast as the node; a frame's focus_roi and cmd_vel go a few
milliseconds before it. The node's fovea_detail says which fovea centre it used for each
frame, and the run counts the frames where that is not the one sent.
"""
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perception_rl.bench_runs import run_jobs
from perception_rl.dds_config import keep_dds_here
from perception_rl.foveation import DEFAULT_ROI_SIZE, Roi
from perception_rl.realtime_bench import Processes, node_argv
from perception_rl.representation_bench import (BLOCK, HEIGHT, PAN_PER_RAD, WIDTH,
                                                ScriptedActions, check_names, probe_r2,
                                                summarise)
from perception_rl.representation_health import effective_rank
from perception_rl.synthetic_scene import ALL_FAMILIES, SyntheticScene

ARMS = {'default': {}, 'frozen': {'aux_loss': 'none'}}
"""perception_node's parameters per arm: its defaults, and the frozen random encoder."""
FRAME_TIMEOUT_S = 30.0
"""How long one frame's features may take before the run is given up."""
START_TIMEOUT_S = 60.0
"""How long the node may take to start and be discovered."""
HEALTH_WAIT_S = 1.5
"""Long enough for a /diagnostics report (once a second) after a part of the run."""
SETTLE_S = 0.005
"""Between a frame's focus_roi and cmd_vel and the frame itself. Published together, the
frame often overtook them (the ROI of the frame before was used for 34 of 100 frames)."""
FIRST_SETTLE_S = 0.5
"""The same before the first frame, whose views become the encoder's anchor: the first message
on a new connection can take longer, and on a loaded machine (the full test suite) the first
frame was once seen with the default ROI instead of its own."""

Item = tuple[np.ndarray, np.ndarray, float, np.ndarray]
"""(frame, fovea centre in [-1, 1], pan in pixels per frame, true state) of one frame."""


def stream_items(scene: SyntheticScene, actions: ScriptedActions, frames: int
                 ) -> Iterator[Item]:
    """The stream of representation_bench.run_arm, frame by frame, in its order of draws."""
    for t in range(frames):
        if t % BLOCK == 0:
            scene.scatter()
        pan, centre = actions.next(scene)
        frame = scene.step(pan)
        yield frame, centre, pan, scene.state()


def heldout_items(scene: SyntheticScene, actions: ScriptedActions, count: int
                  ) -> Iterator[Item]:
    """Fresh frames, each a cut of its own, as representation_bench probes the final encoder."""
    for _ in range(count):
        scene.scatter()
        frame = scene.step(0.0)
        actions.saccade(scene)
        yield frame, actions.centre.copy(), 0.0, scene.state()


class NodeDriver:
    """This process's side of the probe: publishes frames, ROI and cmd_vel, collects features,
    fovea_detail and perception_node's /diagnostics."""

    def __init__(self):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import Twist
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.signals import SignalHandlerOptions
        from sensor_msgs.msg import Image, RegionOfInterest
        from std_msgs.msg import Float32MultiArray

        from perception_rl import qos
        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = Node('node_probe', context=self.context)
        self._image_msg, self._twist_msg, self._roi_msg = Image, Twist, RegionOfInterest
        self.images = self.node.create_publisher(Image, 'image_raw', qos.IMAGES)
        self.twists = self.node.create_publisher(Twist, 'cmd_vel', qos.LATEST)
        self.rois = self.node.create_publisher(RegionOfInterest, 'focus_roi', qos.LATEST)
        self.features: list[np.ndarray] = []
        self.centres: list[np.ndarray] = []
        self.health: dict[str, str] = {}
        self.node.create_subscription(Float32MultiArray, 'features', self._on_features,
                                      qos.FEATURES)
        self.node.create_subscription(Float32MultiArray, 'fovea_detail', self._on_detail,
                                      qos.FEATURES)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_health, 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def _on_features(self, msg) -> None:
        self.features.append(np.asarray(msg.data, np.float32))

    def _on_detail(self, msg) -> None:
        self.centres.append(np.asarray(msg.data[:2], np.float32))

    def _on_health(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith('perception_node'):
                self.health = {kv.key: kv.value for kv in status.values}

    def spin_until(self, done, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while not done():
            if time.monotonic() > end:
                return False
            self.executor.spin_once(timeout_sec=0.01)
        return True

    def connected(self) -> bool:
        """Whether perception_node subscribes to all three inputs and publishes features."""
        return (min(p.get_subscription_count() for p in (self.images, self.twists, self.rois))
                > 0 and self.node.count_publishers('features') > 0)

    def send_action(self, centre: np.ndarray, pan: float) -> Roi:
        roi = Roi.around(float(centre[0]), float(centre[1]), WIDTH, HEIGHT, DEFAULT_ROI_SIZE,
                         DEFAULT_ROI_SIZE)
        self.rois.publish(self._roi_msg(x_offset=roi.x, y_offset=roi.y, width=roi.width,
                                        height=roi.height))
        twist = self._twist_msg()
        twist.angular.z = pan / PAN_PER_RAD
        self.twists.publish(twist)
        return roi

    def send_frame(self, frame: np.ndarray) -> None:
        from perception_rl.image_conversion import fill_bgr8
        msg = self._image_msg()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.header.frame_id = 'node_probe'
        fill_bgr8(msg, frame)
        self.images.publish(msg)

    def set_train(self, value: bool) -> None:
        """`ros2 param set perception_node train value`, through the parameter service."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter
        client = self.node.create_client(SetParameters, 'perception_node/set_parameters')
        if not client.wait_for_service(timeout_sec=20.0):
            raise RuntimeError('perception_node offers no parameter service')
        future = client.call_async(SetParameters.Request(
            parameters=[Parameter('train', value=value).to_parameter_msg()]))
        if not self.spin_until(future.done, 10.0) or not future.result().results[0].successful:
            raise RuntimeError(f'perception_node refused train:={value}')
        self.node.destroy_client(client)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


def _drive(driver: NodeDriver, items: Iterator[Item], sent: list[np.ndarray],
           states: list[np.ndarray]) -> None:
    """Publish each item's focus_roi and cmd_vel, then, SETTLE_S later (FIRST_SETTLE_S for the
    first), its frame; the next once its features have come back."""
    for frame, centre, pan, state in items:
        sent.append(np.array(driver.send_action(centre, pan).centre(WIDTH, HEIGHT)))
        driver.spin_until(lambda: False, FIRST_SETTLE_S if len(sent) == 1 else SETTLE_S)
        expected = len(driver.features) + 1
        driver.send_frame(frame)
        states.append(state)
        if not driver.spin_until(lambda: len(driver.features) >= expected, FRAME_TIMEOUT_S):
            raise RuntimeError(f'no features for frame {expected} within {FRAME_TIMEOUT_S} s')


@dataclass
class NodeRun:
    """What one perception_node process published for a stream and its held-out frames."""

    features: np.ndarray
    """[stream + held-out frames, 64], in the order sent."""
    states: np.ndarray
    """The true state of each frame."""
    sent: np.ndarray
    """[frames, 2] the fovea centre sent on focus_roi for each frame."""
    used: np.ndarray
    """[frames, 2] the fovea centre the node says (fovea_detail) it saw each frame through."""
    stream_s: float
    """Wall time of the stream part."""
    trained: dict[str, str]
    """The node's /diagnostics values once the stream was done and train was switched off."""
    after: dict[str, str]
    """Its values after the held-out frames."""


def collect(arm: str, family: str, seed: int, frames: int, heldout: int, log_dir: Path
            ) -> NodeRun:
    """Start perception_node with the arm's parameters, drive `frames` stream frames through
    it, switch `train` off, drive `heldout` fresh frames; the node is stopped afterwards
    (RuntimeError if it does not start, answer or exit cleanly)."""
    processes = Processes(log_dir)
    processes.start('perception_node', node_argv('perception_node', {
        **ARMS[arm], 'seed': seed, 'publish_fovea_detail': True}))
    driver = NodeDriver()
    try:
        if not driver.spin_until(driver.connected, START_TIMEOUT_S):
            raise RuntimeError(f'perception_node did not start:\n{processes.tail()}')
        scene = SyntheticScene(WIDTH, HEIGHT, ALL_FAMILIES[family], seed=1000 + seed)
        actions = ScriptedActions(seed)
        sent, states = [], []
        started = time.monotonic()
        _drive(driver, stream_items(scene, actions, frames), sent, states)
        stream_s = time.monotonic() - started
        driver.set_train(False)
        driver.spin_until(lambda: False, HEALTH_WAIT_S)
        trained = dict(driver.health)
        _drive(driver, heldout_items(scene, actions, heldout), sent, states)
        driver.spin_until(lambda: False, HEALTH_WAIT_S)
        after = dict(driver.health)
    finally:
        driver.close()
        codes = processes.stop()
    if codes['perception_node'] != 0:
        raise RuntimeError(f'perception_node exited with {codes}:\n{processes.tail()}')
    return NodeRun(np.stack(driver.features), np.stack(states), np.stack(sent),
                   np.stack(driver.centres), stream_s, trained, after)


def run_node_arm(arm: str, family: str, seed: int, frames: int, heldout: int,
                 log_dir: str) -> dict:
    """One benchmark job on a ROS domain of its own: the probe's figures of one node run, as
    representation_bench.run_arm reports them."""
    keep_dds_here()
    run = collect(arm, family, seed, frames, heldout, Path(log_dir) / f'{arm}-{family}-{seed}')
    stream, held = slice(0, frames), slice(frames, None)
    r2 = {}
    for name, part in (('stream', stream), ('frozen', held)):
        r2[f'{name}_r2'] = probe_r2(run.features[part], run.states[part])
        r2[f'{name}_r2_pan'] = probe_r2(run.features[part], run.states[part, :2])
        r2[f'{name}_r2_objects'] = probe_r2(run.features[part], run.states[part, 2:])
    return {'arm': arm, 'family': family, 'seed': seed, 'frames': frames, **r2,
            'stream_rank': effective_rank(run.features[stream][-1000:]),
            'frozen_rank': effective_rank(run.features[held]),
            'ms_per_frame': 1e3 * run.stream_s / frames,
            'train_ms_p50': float(run.trained.get('train_ms_p50', 'nan')),
            'train_steps': int(run.trained.get('train_steps', 0)),
            'train_steps_after_off': int(run.after.get('train_steps', 0)),
            'train_skipped_budget': int(run.trained.get('train_skipped_budget', 0)),
            'fovea_mismatches': int((np.abs(run.used - run.sent) > 1e-3).any(1).sum())}


def run_benchmark(arms: list[str], families: list[str], seeds: int, frames: int, heldout: int,
                  out: Path, workers: int) -> list[dict]:
    """Every arm x family x seed through its own perception_node; results.csv and table.md."""
    check_names(arms, ARMS, families)
    jobs = [(a, f, s, frames, heldout, str(out / 'logs'))
            for f in families for s in range(seeds) for a in arms]
    return run_jobs(run_node_arm, jobs, out, workers, lambda row: (
        f"{row['family']:15s} {row['arm']:8s} seed {row['seed']}  stream R² "
        f"{row['stream_r2']:6.3f}  held-out R² {row['frozen_r2']:6.3f}  rank "
        f"{row['stream_rank']:5.1f}  {row['ms_per_frame']:5.1f} ms/frame, node train "
        f"{row['train_ms_p50']:.1f} ms p50, {row['train_steps']} steps "
        f"({row['train_steps_after_off']} after train:=false), "
        f"{row['train_skipped_budget']} skipped for the budget, "
        f"{row['fovea_mismatches']} fovea mismatches"), summarise)
