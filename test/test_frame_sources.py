"""Frame sources: a real video file made here, the synthetic scene, a missing camera, and the
grabber that reads them on a thread."""
import threading
import time

import cv2
import numpy as np
import pytest

from perception_rl.frame_sources import FrameGrabber, FrameSource, SourceError, SourceSpec


@pytest.fixture
def video(tmp_path):
    """A 10-frame 160x120 MJPG video whose frames get brighter one by one."""
    path = tmp_path / 'clip.avi'
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 20.0, (160, 120))
    assert writer.isOpened()
    for i in range(10):
        writer.write(np.full((120, 160, 3), 20 * i, np.uint8))
    writer.release()
    return path


@pytest.mark.parametrize('text, kind, target', [
    ('synthetic', 'synthetic', 'synthetic'), ('0', 'device', 0),
    ('/dev/video2', 'device', '/dev/video2'), ('clip.mp4', 'file', 'clip.mp4'),
    ('http://10.0.0.5/video.mjpg', 'stream', 'http://10.0.0.5/video.mjpg')])
def test_source_parameter_is_parsed(text, kind, target):
    assert SourceSpec.parse(text) == SourceSpec(kind, target)


def test_a_file_without_loop_ends_after_its_frames(video):
    source = FrameSource(SourceSpec.parse(str(video)), 64, 48, 20.0, loop=False)
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    assert len(frames) == 10 and source.ended
    assert frames[0].shape == (48, 64, 3)  # resized to the configured size
    assert frames[-1].mean() > frames[0].mean() + 100


def test_a_file_with_loop_starts_again(video):
    source = FrameSource(SourceSpec.parse(str(video)), 160, 120, 20.0, loop=True)
    means = [source.read().mean() for _ in range(25)]
    assert not source.ended and means[10] < means[9] - 100  # frame 11 is frame 1 again


def test_missing_camera_and_file_give_clear_errors(tmp_path):
    with pytest.raises(SourceError, match='video devices on this machine'):
        FrameSource(SourceSpec.parse('/dev/video99'), 64, 48, 20.0)
    with pytest.raises(SourceError, match='does not exist'):
        FrameSource(SourceSpec.parse(str(tmp_path / 'none.mp4')), 64, 48, 20.0)


def test_synthetic_frames_move():
    source = FrameSource(SourceSpec.parse('synthetic'), 640, 480, 20.0)
    first, second = source.read(), source.read()
    assert first.shape == (480, 640, 3) and first.dtype == np.uint8
    assert np.abs(first.astype(int) - second.astype(int)).mean() > 0.5


def test_a_grabber_reads_on_request_and_a_hung_read_does_not_block_its_caller():
    release = threading.Event()

    class Source:  # a camera whose third read never returns until released
        reads, closed, ended = 0, False, False

        def read(self):
            self.reads += 1
            if self.reads == 3:
                release.wait()
            return np.full((2, 2, 3), self.reads, np.uint8)

        def close(self):
            self.closed = True

    source = Source()
    grabber = FrameGrabber(lambda: source)
    for expected in (1, 2):
        grabber.request()
        deadline = time.monotonic() + 5.0
        while not (result := grabber.take())[0] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert result[0] and result[1][0, 0, 0] == expected
    grabber.request()
    time.sleep(0.3)
    assert grabber.take() == (False, None) and grabber.busy_for() >= 0.25
    start = time.monotonic()
    grabber.close()  # returns at once, the read still hanging
    assert time.monotonic() - start < 0.1 and not source.closed
    release.set()
    grabber.close(timeout=5.0)
    assert source.closed and source.reads == 3


def test_a_grabber_reports_a_source_that_cannot_be_opened():
    def missing():
        raise SourceError('cannot open camera 7')

    grabber = FrameGrabber(missing)
    deadline = time.monotonic() + 5.0
    while grabber.error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert 'camera 7' in str(grabber.error) and grabber.source is None
    assert grabber.busy_for() == 0.0
