"""camera_node: frames from a camera, a stream, a video file or the synthetic scene on
`image_raw`."""
import sys
import time

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image

from perception_rl import qos
from perception_rl.frame_sources import FrameGrabber, FrameSource, SourceError, SourceSpec
from perception_rl.health import ERROR, OK, WARN, HealthPublisher
from perception_rl.image_conversion import fill_bgr8
from perception_rl.node_main import run_node
from perception_rl.node_params import ParameterError, ParamSpec, declare_parameters
from perception_rl.timing import FrameTrace, LatencyWindow

PARAMETERS = [
    ParamSpec('source', 'synthetic',
              "'synthetic' (built-in moving scene), a device index ('0'), a device path "
              "('/dev/video0', '/dev/v4l/by-id/...'), a stream URL ('http://.../video.mjpg', "
              "'rtsp://...') or a video file"),
    ParamSpec('image_width', 640, 'Width of the published frames (the device is asked for it; '
              'other sizes are resized)', low=16, high=8192),
    ParamSpec('image_height', 480, 'Height of the published frames', low=16, high=8192),
    ParamSpec('framerate', 20.0, 'Frames per second published', low=0.1, high=240.0),
    ParamSpec('frame_id', 'camera', 'frame_id of the published image headers'),
    ParamSpec('loop', True, 'Restart a video file at its end (otherwise publishing stops)'),
    ParamSpec('seed', 0, 'Seed of the synthetic scene', low=0, high=2**31 - 1),
    ParamSpec('read_timeout', 1.0, 'Seconds without a new frame (a read failing, hanging or '
              'returning the previous frame again) after which the source counts as lost: '
              'publishing stops and it is reopened (at least 3 frame periods)',
              low=0.1, high=60.0),
    ParamSpec('trace_file', '', "CSV of each frame's timestamps, for perception-rl bench "
              "('' for none)"),
]
TRACE_FIELDS = ('stamp_ns', 'tick_ns', 'publish_ns', 'published_ns')
RETRY_MAX_S = 30.0
"""Longest wait between attempts to open a missing source."""
OPEN_TIMEOUT_S = 10.0
"""An open that takes longer than this is hung (USB cameras take up to a few seconds)."""


class CameraNode(Node):
    """Publishes stamped bgr8 frames at `framerate`; notices a source that is missing, lost,
    hung or frozen, stops publishing and reopens it with backoff.

    The source is opened and read by a FrameGrabber on a thread of its own, one frame per
    tick, so that a camera that stops answering cannot stall the node: the tick sees no new
    frame for `read_timeout` and abandons the grabber. One error is logged per outage and one
    line when frames flow again; the attempts in between are at debug level.
    """

    def __init__(self, **kwargs):
        super().__init__('camera_node', **kwargs)
        self._grabber: FrameGrabber | None = None  # before anything can fail: destroy_node
        self._trace: FrameTrace | None = None
        p = declare_parameters(self, PARAMETERS)
        try:
            self._spec = SourceSpec.parse(p['source'])
        except SourceError as error:
            raise ParameterError(f"parameter 'source': {error}") from None
        self._p = p
        self._lost_after = max(p['read_timeout'], 3.0 / p['framerate'])
        self._capture_wait = 0.5 / p['framerate']
        self._publisher = self.create_publisher(
            Image, 'image_raw', qos.IMAGES, qos_overriding_options=qos.overridable())
        self._ready = False  # the grabber's source is open
        self._failing = False  # an outage is under way (and was reported)
        self._retry_delay = 1.0
        self._next_open = 0.0
        self._last_new = time.monotonic()
        self._previous: np.ndarray | None = None
        self._problem = 'reads failed'
        self.published = 0
        self.reads_failed = 0
        self.frames_stale = 0
        self.outages = 0
        self.attempts_failed = 0
        self._status = 'opening'
        self._tick = LatencyWindow()
        self._trace = FrameTrace(p['trace_file'], TRACE_FIELDS) if p['trace_file'] else None
        self._timer = self.create_timer(1.0 / p['framerate'], self._on_tick)
        self._health = HealthPublisher(self, self._report, hardware_id=str(p['source']))
        self.get_logger().info(
            f"publishing image_raw from {p['source']} at {p['image_width']}x{p['image_height']}"
            f", {p['framerate']} Hz")
        self._open()

    def _make_source(self) -> FrameSource:
        p = self._p
        return FrameSource(self._spec, p['image_width'], p['image_height'], p['framerate'],
                           p['loop'], p['seed'])

    def _open(self) -> None:
        self._grabber, self._ready, self._previous = FrameGrabber(self._make_source), False, None

    def _on_tick(self) -> None:
        start = time.perf_counter()
        tick_ns = time.time_ns()
        grabber, now = self._grabber, time.monotonic()
        if grabber is None:
            if now >= self._next_open:
                self._open()
            return
        if grabber.error is not None:
            self._fail(str(grabber.error))
            return
        if grabber.source is None:
            if grabber.busy_for() > OPEN_TIMEOUT_S:
                self._fail(f'opening {self._p["source"]} hung for {OPEN_TIMEOUT_S:.0f} s')
            return
        if not self._ready:  # the no-frame clock starts when the source is open
            self._ready, self._last_new = True, now
        # Read at the tick and wait for it up to half a period, so that a published frame is
        # as old as one read, not one tick; a read that takes longer is taken at a later tick.
        if not grabber.source.ended:
            grabber.request()
        done, frame = grabber.take(timeout=self._capture_wait)
        if done:
            self._on_frame(frame, time.monotonic(), tick_ns)
            self._tick.add(1e3 * (time.perf_counter() - start))
        if grabber.source.ended:
            return
        if now - self._last_new > self._lost_after:
            why = 'a read hung' if grabber.busy_for() > self._lost_after / 2 else self._problem
            self._fail(f'no new frame from {self._p["source"]} for {self._lost_after:.1f} s '
                       f'({why})')

    def _on_frame(self, frame: np.ndarray | None, now: float, tick_ns: int) -> None:
        if frame is None:
            if self._grabber.source.ended:
                self._status = 'ended'
                self.get_logger().info('video file ended (loop is off): publishing stopped')
                return
            self.reads_failed += 1
            self._problem = 'reads failed'
            return
        if self._spec.live and self._previous is not None and np.array_equal(frame,
                                                                            self._previous):
            # A live camera never sees exactly the same picture twice: the driver handed
            # over an old buffer again. Publishing it would claim the past is now.
            self.frames_stale += 1
            self._problem = 'the same frame again and again'
            return
        first, self._previous = self._previous is None, frame
        if first and self._failing and self._spec.live:
            return  # after an outage, a live source is back once it shows two different frames
        self._last_new = now
        if self._status != 'ok':
            if self._failing:
                self.get_logger().info(f"frames from {self._p['source']} again: publishing")
            self._failing, self._retry_delay, self._status = False, 1.0, 'ok'
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

    def _fail(self, why: str) -> None:
        """Abandon the source and try again after the backoff delay; one error an outage."""
        self._grabber.close()
        self._grabber = None
        self._status = why
        retry = f'; publishing stopped, retrying in {self._retry_delay:.0f} s, then with ' \
                f'backoff up to every {RETRY_MAX_S:.0f} s'
        if self._failing:
            self.attempts_failed += 1
            self.get_logger().debug(why + retry)
        else:
            self._failing = True
            self.outages += 1
            self.get_logger().error(why + retry)
        self._next_open = time.monotonic() + self._retry_delay
        self._retry_delay = min(2.0 * self._retry_delay, RETRY_MAX_S)

    def _report(self):
        level = OK if self._status == 'ok' else (WARN if self._status == 'ended' else ERROR)
        tick = self._tick.summary()
        return level, self._status, {
            'frames_published': self.published, 'reads_failed': self.reads_failed,
            'frames_stale': self.frames_stale, 'outages': self.outages,
            'attempts_failed': self.attempts_failed,
            'tick_ms_p50': tick['p50'], 'tick_ms_p99': tick['p99']}

    def shutdown(self) -> None:
        if self._grabber is not None:
            self._grabber.close(timeout=2.0)
            self._grabber = None
        if self._trace is not None:
            self._trace.close()
            self._trace = None

    def destroy_node(self) -> None:
        self.shutdown()  # also when the node is destroyed without having spun (run_job)
        super().destroy_node()


def main(args=None):
    sys.exit(run_node(CameraNode, args))


if __name__ == '__main__':
    main()
