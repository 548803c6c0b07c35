"""camera_node against a camera that fails: missing, unplugged, hung, frozen, and back again.

The fake camera is a network camera: an MJPEG-over-HTTP server in this process, the format
of most IP cameras, read by camera_node through OpenCV's FFmpeg backend exactly as a real one
would be. Unlike a /dev/video device (which needs the v4l2loopback kernel module, absent where
CI runs), it can be made to vanish (the server closes: connection refused), come back (a new
server on the same port), hang (the connection stays open and no byte comes), freeze (the
same JPEG again and again) and send empty frames on cue.
"""
import re
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest
from test_nodes_integration import Recorder

pytestmark = pytest.mark.timeout(240)

LOG_TIME = re.compile(r'\[(ERROR|INFO|WARN)\] \[(\d+\.\d+)\] \[camera_node\]: (.*)')


class FakeCamera:
    """An MJPEG stream at 20 Hz on 127.0.0.1; `mode` is 'live', 'frozen' (the same picture),
    'empty' (parts of no bytes) or 'hang' (nothing)."""

    def __init__(self):
        with socket.socket() as probe:
            probe.bind(('127.0.0.1', 0))
            self.port = probe.getsockname()[1]
        self.url = f'http://127.0.0.1:{self.port}/video.mjpg'
        self.mode = 'live'
        self._server = None
        self._serving = False

    def up(self) -> None:
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header('Content-Type', 'multipart/x-mixed-replace; boundary=frame')
                self.end_headers()
                count = 0
                while camera._serving:
                    time.sleep(0.05)
                    if camera.mode == 'hang':
                        continue
                    count += camera.mode == 'live'
                    image = np.full((120, 160, 3), (count * 7) % 256, np.uint8)
                    image[10:20, count % 150:count % 150 + 10] = 255 - image[0, 0]
                    jpeg = (b'' if camera.mode == 'empty'
                            else cv2.imencode('.jpg', image)[1].tobytes())
                    try:
                        self.wfile.write(b'--frame\r\nContent-Type: image/jpeg\r\n'
                                         b'Content-Length: %d\r\n\r\n' % len(jpeg) + jpeg
                                         + b'\r\n')
                    except OSError:
                        return

        self._server = ThreadingHTTPServer(('127.0.0.1', self.port), Handler)
        self._server.daemon_threads = True
        self._serving = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        """Unplugged: open connections end, new ones are refused."""
        self._serving = False
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def camera():
    fake = FakeCamera()
    yield fake
    fake.down()


def _events(node) -> list[tuple[str, float, str]]:
    """(level, wall time, text) of each line camera_node logged."""
    return [(m[1], float(m[2]), m[3]) for m in map(LOG_TIME.search, node.output().splitlines())
            if m]


class Images:
    def __init__(self, context):
        from rclpy.node import Node
        from sensor_msgs.msg import Image
        self.node = Node('camera_fault_watcher', context=context)
        self.times: list[float] = []
        self.node.create_subscription(Image, 'image_raw', lambda _: self.times.append(
            time.time()), 10)

    def since(self, t: float) -> int:
        return sum(stamp >= t for stamp in self.times)


def _wait_for_error(node, spin, watcher, text: str, after: float, timeout: float):
    """The first ERROR logged after `after` (wall time) that contains `text`."""
    def found():
        return [e for e in _events(node) if e[0] == 'ERROR' and e[1] >= after and text in e[2]]
    assert spin(watcher.node, timeout, until=lambda: bool(found())), node.output()[-3000:]
    return found()[0]


def _back_to_live(camera, node, spin, watcher) -> None:
    """The camera serves live frames again: 20 of them are published within 30 s."""
    camera.mode = 'live'
    resumed = time.time()
    assert spin(watcher.node, 30.0, until=lambda: watcher.since(resumed) >= 20), \
        node.output()[-3000:]


def test_a_network_camera_missing_unplugged_hung_frozen_and_empty(ros_context, start_node, spin,
                                                            camera):
    read_timeout = 1.0
    node = start_node('camera_node', {'source': camera.url, 'image_width': 160,
                                      'image_height': 120, 'read_timeout': read_timeout})
    watcher = Images(ros_context)

    # Missing at start: one clear error, retries with backoff and no more errors.
    start = time.time()
    _wait_for_error(node, spin, watcher, 'cannot open stream', 0.0, 60.0)
    spin(watcher.node, 4.0)
    errors = [e for e in _events(node) if e[0] == 'ERROR']
    assert len(errors) == 1 and 'retrying' in errors[0][2], errors
    assert node.process.poll() is None and not watcher.times

    camera.up()
    assert spin(watcher.node, 30.0, until=lambda: len(watcher.times) >= 20), node.output()
    back_log = [e for e in _events(node) if e[0] == 'INFO' and 'again' in e[2]]
    assert back_log, node.output()
    print(f'\nmissing camera: 1 error in {time.time() - start:.0f} s; frames once it was there')

    # Unplugged mid-run: detected within read_timeout of the last frame, publishing stops.
    unplugged = time.time()
    camera.down()
    error = _wait_for_error(node, spin, watcher, 'no new frame', unplugged, 10.0)
    last_frame = max(watcher.times)
    print(f'unplugged: detected {error[1] - unplugged:.2f} s after ({error[2]!r}); last frame '
          f'{last_frame - unplugged:+.2f} s')
    assert error[1] - last_frame <= read_timeout + 0.5
    spin(watcher.node, 3.0)
    assert watcher.since(error[1]) == 0, 'frames published after the source was lost'
    camera.up()
    replugged = time.time()
    assert spin(watcher.node, 30.0, until=lambda: watcher.since(replugged) >= 20), \
        node.output()[-3000:]
    print(f'back: frames again {min(t for t in watcher.times if t >= replugged) - replugged:.2f}'
          ' s after the camera returned')

    # Hung: the connection stays open and nothing comes; the node does not hang with it.
    camera.mode = 'hang'
    hung = time.time()
    error = _wait_for_error(node, spin, watcher, 'a read hung', hung, 10.0)
    print(f'hung: detected {error[1] - hung:.2f} s after ({error[2]!r})')
    assert error[1] - hung <= read_timeout + 0.5 + 0.1
    _back_to_live(camera, node, spin, watcher)

    # Frozen: the same picture again and again is not published as new.
    camera.mode = 'frozen'
    frozen = time.time()
    error = _wait_for_error(node, spin, watcher, 'the same frame again', frozen, 10.0)
    print(f'frozen: detected {error[1] - frozen:.2f} s after ({error[2]!r})')
    assert watcher.since(frozen + 0.5) == 0, 'stale frames were published'
    _back_to_live(camera, node, spin, watcher)

    # Empty frames: nothing to publish, and after read_timeout the source counts as lost.
    camera.mode = 'empty'
    emptied = time.time()
    error = _wait_for_error(node, spin, watcher, 'no new frame', emptied, 10.0)
    print(f'empty frames: detected {error[1] - emptied:.2f} s after ({error[2]!r})')
    assert watcher.since(emptied + 0.5) == 0, 'frames published from empty parts'
    _back_to_live(camera, node, spin, watcher)

    errors = [e for e in _events(node) if e[0] == 'ERROR']
    assert len(errors) == 5, errors  # one per outage: missing, unplugged, hung, frozen, empty
    watcher.node.destroy_node()
    assert node.stop(signal.SIGTERM) == 0, node.output()[-3000:]
    assert 'Traceback' not in node.output()


@pytest.mark.parametrize('loop', [False, True])
def test_the_end_of_a_video_file_follows_loop(ros_context, start_node, spin, tmp_path, loop):
    path = tmp_path / 'clip.avi'
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 20.0, (160, 120))
    for i in range(10):
        writer.write(np.full((120, 160, 3), 20 * i, np.uint8))
    writer.release()
    node = start_node('camera_node', {'source': str(path), 'image_width': 160,
                                      'image_height': 120, 'loop': loop})
    recorder = Recorder(ros_context)
    published = lambda: int(recorder.latest('camera_node', 'frames_published') or 0)  # noqa
    ended = lambda: recorder.diagnostics['camera_node: health'] and any(  # noqa: E731
        d.get('frames_published') == '10' for d in recorder.diagnostics['camera_node: health'])
    spin(recorder.node, 60.0, until=lambda: published() >= 25 or (not loop and ended()))
    spin(recorder.node, 2.0)
    if loop:
        assert published() >= 25
    else:
        assert published() == 10
        assert any('video file ended' in e[2] for e in _events(node))
    assert not [e for e in _events(node) if e[0] == 'ERROR'], node.output()
    recorder.node.destroy_node()
    assert node.stop(signal.SIGINT) == 0


def test_a_missing_device_is_one_error_that_lists_the_devices_and_retried(ros_context,
                                                                         start_node, spin):
    node = start_node('camera_node', {'source': '/dev/video99'})
    recorder = Recorder(ros_context)
    retried = lambda: int(recorder.latest('camera_node', 'attempts_failed') or 0) >= 2  # noqa
    assert spin(recorder.node, 60.0, until=retried), node.output()
    errors = [e for e in _events(node) if e[0] == 'ERROR']
    assert len(errors) == 1, errors
    assert "cannot open camera '/dev/video99'; video devices on this machine:" in errors[0][2]
    assert node.process.poll() is None
    recorder.node.destroy_node()
    assert node.stop(signal.SIGTERM) == 0
