"""The bare transport under the nodes: the floor that `perception-rl bench` measures them against.

The same process graph as camera -> perception -> agent, with empty callbacks: a source
publishes stamped bgr8 frames of the camera's size at its rate, one relay answers each frame
with 64 floats, a second relay answers those with a Twist. Topics, message types and QoS are
the nodes' own (perception_rl.qos), so only the work inside the callbacks differs.

    python -m perception_rl.transport_floor source --width 640 --height 480 --rate 20 \
        --trace source.csv
    python -m perception_rl.transport_floor image_relay
    python -m perception_rl.transport_floor features_relay

The frame's index rides along (header.frame_id, then the first float, then linear.x), so the
observer can tell which frame each Twist answers.
"""
import argparse
import sys
import time

import numpy as np
from geometry_msgs.msg import Twist
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Float32MultiArray, MultiArrayDimension

from perception_rl import qos
from perception_rl.image_conversion import fill_bgr8
from perception_rl.node_main import run_node
from perception_rl.timing import FrameTrace

IMAGES, FEATURES, COMMANDS = 'floor/image_raw', 'floor/features', 'floor/cmd_vel'
FEATURE_DIM = 64
SOURCE_FIELDS = ('index', 'stamp_ns', 'published_ns')


class FloorSource(Node):
    """Publishes a fixed noise frame at `rate`, stamped like camera_node's."""

    def __init__(self, width: int, height: int, rate: float, trace: str):
        super().__init__('floor_source')
        self._frame = np.random.default_rng(0).integers(0, 256, (height, width, 3), np.uint8)
        self._publisher = self.create_publisher(Image, IMAGES, qos.IMAGES)
        self._trace = FrameTrace(trace, SOURCE_FIELDS) if trace else None
        self._index = 0
        self.create_timer(1.0 / rate, self._on_tick)

    def _on_tick(self) -> None:
        msg = Image()
        stamp = self.get_clock().now()
        msg.header.stamp = stamp.to_msg()
        msg.header.frame_id = str(self._index)
        fill_bgr8(msg, self._frame)
        self._publisher.publish(msg)
        if self._trace is not None:
            self._trace.row(self._index, stamp.nanoseconds, time.time_ns())
        self._index += 1

    def shutdown(self) -> None:
        if self._trace is not None:
            self._trace.close()


class ImageRelay(Node):
    """image -> 64 floats, the first being the frame's index."""

    def __init__(self):
        super().__init__('floor_image_relay')
        self._publisher = self.create_publisher(Float32MultiArray, FEATURES, qos.FEATURES)
        self.create_subscription(Image, IMAGES, self._on_image, qos.IMAGES)

    def _on_image(self, msg: Image) -> None:
        out = Float32MultiArray()
        out.layout.dim = [MultiArrayDimension(label='features', size=FEATURE_DIM,
                                              stride=FEATURE_DIM)]
        out.data = [float(msg.header.frame_id)] + [0.0] * (FEATURE_DIM - 1)
        self._publisher.publish(out)


class FeaturesRelay(Node):
    """64 floats -> a Twist whose linear.x is the frame's index."""

    def __init__(self):
        super().__init__('floor_features_relay')
        self._publisher = self.create_publisher(Twist, COMMANDS, qos.LATEST)
        self.create_subscription(Float32MultiArray, FEATURES, self._on_features, qos.FEATURES)

    def _on_features(self, msg: Float32MultiArray) -> None:
        out = Twist()
        out.linear.x = float(msg.data[0])
        self._publisher.publish(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('role', choices=('source', 'image_relay', 'features_relay'))
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--rate', type=float, default=20.0)
    parser.add_argument('--trace', default='', help='CSV of the source frames (source only)')
    args = parser.parse_args(argv)
    make = {'source': lambda: FloorSource(args.width, args.height, args.rate, args.trace),
            'image_relay': ImageRelay, 'features_relay': FeaturesRelay}[args.role]
    sys.exit(run_node(make))


if __name__ == '__main__':
    main()
