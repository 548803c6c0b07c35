"""camera_node: frames from a camera, a video file or the synthetic scene on `image_raw`."""
import sys
import time

from rclpy.node import Node
from sensor_msgs.msg import Image

from perception_rl import qos
from perception_rl.frame_sources import FrameSource, SourceError, SourceSpec
from perception_rl.health import ERROR, OK, WARN, HealthPublisher
from perception_rl.image_conversion import fill_bgr8
from perception_rl.node_main import run_node
from perception_rl.node_params import ParameterError, ParamSpec, declare_parameters
from perception_rl.timing import FrameTrace, LatencyWindow

PARAMETERS = [
    ParamSpec('source', 'synthetic',
              "'synthetic' (built-in moving scene), a device index ('0'), a device path "
              "('/dev/video0', '/dev/v4l/by-id/...') or a video file"),
    ParamSpec('image_width', 640, 'Width of the published frames (the device is asked for it; '
              'other sizes are resized)', low=16, high=8192),
    ParamSpec('image_height', 480, 'Height of the published frames', low=16, high=8192),
    ParamSpec('framerate', 20.0, 'Frames per second published', low=0.1, high=240.0),
    ParamSpec('frame_id', 'camera', 'frame_id of the published image headers'),
    ParamSpec('loop', True, 'Restart a video file at its end (otherwise publishing stops)'),
    ParamSpec('seed', 0, 'Seed of the synthetic scene', low=0, high=2**31 - 1),
    ParamSpec('trace_file', '', "CSV of each frame's timestamps, for perception-rl bench "
              "('' for none)"),
]
TRACE_FIELDS = ('stamp_ns', 'tick_ns', 'publish_ns', 'published_ns')
RETRY_MAX_S = 30.0
"""Longest wait between attempts to open a missing source."""


class CameraNode(Node):
    """Publishes stamped bgr8 frames at `framerate`; reopens a lost source with backoff."""

    def __init__(self, **kwargs):
        super().__init__('camera_node', **kwargs)
        p = declare_parameters(self, PARAMETERS)
        try:
            self._spec = SourceSpec.parse(p['source'])
        except SourceError as error:
            raise ParameterError(f"parameter 'source': {error}") from None
        self._p = p
        self._publisher = self.create_publisher(
            Image, 'image_raw', qos.IMAGES, qos_overriding_options=qos.overridable())
        self._source: FrameSource | None = None
        self._retry_delay = 1.0
        self._next_open = 0.0
        self._failed_reads = 0
        self.published = 0
        self._status = 'starting'
        self._tick = LatencyWindow()
        self._trace = FrameTrace(p['trace_file'], TRACE_FIELDS) if p['trace_file'] else None
        self._open_source()
        self._timer = self.create_timer(1.0 / p['framerate'], self._on_tick)
        self._health = HealthPublisher(self, self._report, hardware_id=str(p['source']))
        self.get_logger().info(
            f"publishing image_raw from {p['source']} at {p['image_width']}x{p['image_height']}"
            f", {p['framerate']} Hz")

    def _open_source(self) -> None:
        p = self._p
        try:
            self._source = FrameSource(self._spec, p['image_width'], p['image_height'],
                                       p['framerate'], p['loop'], p['seed'])
            self._retry_delay, self._failed_reads, self._status = 1.0, 0, 'ok'
        except SourceError as error:
            self._source = None
            self._status = str(error)
            self.get_logger().error(f'{error}; trying again in {self._retry_delay:.0f} s')
            self._next_open = time.monotonic() + self._retry_delay
            self._retry_delay = min(2.0 * self._retry_delay, RETRY_MAX_S)

    def _on_tick(self) -> None:
        start = time.perf_counter()
        tick_ns = time.time_ns()
        if self._source is None:
            if time.monotonic() >= self._next_open:
                self._open_source()
            return
        frame = self._source.read()
        if frame is None:
            self._on_missing_frame()
            return
        self._failed_reads = 0
        msg = Image()
        stamp = self.get_clock().now()
        msg.header.stamp = stamp.to_msg()
        msg.header.frame_id = self._p['frame_id']
        fill_bgr8(msg, frame)
        publish_ns = time.time_ns()
        self._publisher.publish(msg)
        self.published += 1
        if self._trace is not None:
            self._trace.row(stamp.nanoseconds, tick_ns, publish_ns, time.time_ns())
        self._tick.add(1e3 * (time.perf_counter() - start))

    def _on_missing_frame(self) -> None:
        if self._source.ended:
            if self._status != 'ended':
                self._status = 'ended'
                self.get_logger().info('video file ended (loop is off): publishing stopped')
            return
        self._failed_reads += 1
        if self._failed_reads >= max(3, int(self._p['framerate'])):  # about a second of failures
            self.get_logger().error(
                f'{self._failed_reads} reads failed in a row from {self._p["source"]}; '
                'reopening it')
            self._source.close()
            self._source = None
            self._status = 'lost, reopening'
            self._next_open = time.monotonic() + self._retry_delay

    def _report(self):
        level = OK if self._status == 'ok' else (WARN if self._status == 'ended' else ERROR)
        tick = self._tick.summary()
        return level, self._status, {'frames_published': self.published,
                                     'tick_ms_p50': tick['p50'], 'tick_ms_p99': tick['p99']}

    def shutdown(self) -> None:
        if self._source is not None:
            self._source.close()
        if self._trace is not None:
            self._trace.close()


def main(args=None):
    sys.exit(run_node(CameraNode, args))


if __name__ == '__main__':
    main()
