"""Image messages to frames: the accepted encodings, and clear errors for everything else."""
import cv2
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from perception_rl.image_conversion import (CHANNELS, ImageError, compressed_to_bgr, fill_bgr8,
                                            image_to_bgr)


@pytest.mark.parametrize('encoding', sorted(CHANNELS))
def test_each_accepted_encoding_becomes_bgr(encoding):
    channels = CHANNELS[encoding]
    pixel = {'bgr8': [10, 20, 30], 'rgb8': [30, 20, 10], 'mono8': [20],
             'bgra8': [10, 20, 30, 255], 'rgba8': [30, 20, 10, 255]}[encoding]
    image = np.tile(np.array(pixel, np.uint8), (4, 6, 1))
    padded = np.zeros((4, 6 * channels + 2), np.uint8)  # a step longer than the row
    padded[:, :6 * channels] = image.reshape(4, -1)
    frame = image_to_bgr(encoding, 4, 6, 6 * channels + 2, padded.tobytes())
    expected = [20, 20, 20] if encoding == 'mono8' else [10, 20, 30]
    assert frame.shape == (4, 6, 3) and (frame == expected).all()


@pytest.mark.parametrize('args, message', [
    (('yuv422', 2, 2, 4, bytes(8)), 'unsupported encoding'),
    (('bgr8', 0, 2, 6, b''), 'size'),
    (('bgr8', 2, 100000, 300000, b''), 'size'),
    (('bgr8', 2, 2, 5, bytes(12)), 'step'),
    (('bgr8', 2, 2, 6, bytes(11)), 'bytes'),
])
def test_malformed_images_are_refused_with_the_reason(args, message):
    with pytest.raises(ImageError, match=message):
        image_to_bgr(*args)


@settings(max_examples=200, deadline=None)
@given(encoding=st.sampled_from(sorted(CHANNELS) + ['16UC1', '', 'bgr8 ']),
       height=st.integers(-2, 40), width=st.integers(-2, 40), step=st.integers(-5, 200),
       data=st.binary(max_size=3000))
def test_garbage_never_escapes_as_anything_but_image_error(encoding, height, width, step, data):
    try:
        frame = image_to_bgr(encoding, height, width, step, data)
    except ImageError:
        return
    assert frame.shape == (height, width, 3) and frame.dtype == np.uint8


def test_a_filled_bgr8_message_reads_back_as_the_same_frame():
    from types import SimpleNamespace
    frame = np.random.default_rng(0).integers(0, 256, (5, 7, 3), np.uint8)
    msg = SimpleNamespace()
    fill_bgr8(msg, frame)
    assert (msg.height, msg.width, msg.encoding, msg.step) == (5, 7, 'bgr8', 21)
    assert np.array_equal(image_to_bgr(msg.encoding, msg.height, msg.width, msg.step, msg.data),
                          frame)


@pytest.mark.parametrize('extension, tolerance', [('.png', 0.0), ('.jpg', 4.0)])  # JPEG: lossy
def test_a_compressed_frame_decodes_to_the_same_frame(extension, tolerance):
    frame = np.zeros((24, 32, 3), np.uint8)
    frame[4:12, 8:20] = (30, 160, 250)
    ok, payload = cv2.imencode(extension, frame)
    assert ok
    decoded = compressed_to_bgr(payload.tobytes())
    assert decoded.shape == frame.shape
    assert np.abs(decoded.astype(int) - frame).mean() <= tolerance


@pytest.mark.parametrize('payload, message', [
    (b'', 'no data'),
    (b'not an image at all', 'does not decode'),
    (b'\xff\xd8\xff\xe0' + bytes(100), 'does not decode'),  # a JPEG header, then nothing
])
def test_bad_compressed_payloads_are_refused_with_the_reason(payload, message):
    with pytest.raises(ImageError, match=message):
        compressed_to_bgr(payload)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=3000))
def test_compressed_garbage_never_escapes_as_anything_but_image_error(data):
    try:
        frame = compressed_to_bgr(data)
    except ImageError:
        return
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8
