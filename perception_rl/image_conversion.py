"""sensor_msgs/Image and CompressedImage fields <-> numpy, without cv_bridge (absent from the
PyPI ROS wheels).

Works on the message's fields, not the message, so the core stays free of rclpy.
"""
import cv2
import numpy as np

CHANNELS = {'bgr8': 3, 'rgb8': 3, 'mono8': 1, 'bgra8': 4, 'rgba8': 4}
"""Encodings accepted on image_raw, with their channel counts."""
_TO_BGR = {'rgb8': cv2.COLOR_RGB2BGR, 'mono8': cv2.COLOR_GRAY2BGR,
           'bgra8': cv2.COLOR_BGRA2BGR, 'rgba8': cv2.COLOR_RGBA2BGR}
MAX_SIDE = 8192
"""Images larger than this on either side are refused rather than allocated."""


class ImageError(ValueError):
    """An image message that cannot be turned into a frame; the message says why, and
    `reason` in a word: 'encoding', 'size', 'layout' (step or data length) or 'other'."""

    def __init__(self, message: str, reason: str = 'other'):
        super().__init__(message)
        self.reason = reason


def fill_bgr8(msg, frame: np.ndarray) -> None:
    """Set an Image message's size, encoding, step and data from a HxWx3 uint8 BGR frame."""
    msg.height, msg.width = frame.shape[:2]
    msg.encoding = 'bgr8'
    msg.step = msg.width * 3
    msg.data = frame.tobytes()


def image_to_bgr(encoding: str, height: int, width: int, step: int, data) -> np.ndarray:
    """A HxWx3 uint8 BGR frame from an Image message's fields (data: bytes-like)."""
    channels = CHANNELS.get(encoding)
    if channels is None:
        raise ImageError(f'unsupported encoding {encoding!r}; accepted: {sorted(CHANNELS)}',
                         'encoding')
    if not (0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE):
        raise ImageError(f'image size {width}x{height} outside 1..{MAX_SIDE}', 'size')
    row = width * channels
    if step < row:
        raise ImageError(f'step {step} is smaller than width*channels = {row}', 'layout')
    buffer = memoryview(data).cast('B')
    if len(buffer) < step * height:
        raise ImageError(f'data holds {len(buffer)} bytes, step*height needs {step * height}',
                         'layout')
    rows = np.frombuffer(buffer, np.uint8, count=step * height).reshape(height, step)
    image = rows[:, :row].reshape(height, width, channels)
    if encoding == 'bgr8':
        return image
    return cv2.cvtColor(np.ascontiguousarray(image), _TO_BGR[encoding])


def compressed_to_bgr(data) -> np.ndarray:
    """A HxWx3 uint8 BGR frame from a CompressedImage's data (JPEG, PNG: what cv2 decodes).

    The message's `format` field is not consulted: image_transport writes it in more than one
    spelling ('jpeg', 'bgr8; jpeg compressed bgr8'), and the payload's own header says what it is.
    """
    buffer = np.frombuffer(memoryview(data).cast('B'), np.uint8)
    if buffer.size == 0:
        raise ImageError('compressed image holds no data')
    try:
        frame = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    except cv2.error as error:
        raise ImageError(f'compressed image does not decode: {error}') from None
    if frame is None:
        raise ImageError(f'compressed image ({buffer.size} bytes) does not decode as JPEG or '
                         'PNG')
    height, width = frame.shape[:2]
    if not (0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE):
        raise ImageError(f'image size {width}x{height} outside 1..{MAX_SIDE}')
    return frame
