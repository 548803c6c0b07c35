"""Write a small rosbag2 recording of the synthetic scene, for the bag tests and benchmarks.

    python test/make_test_bag.py OUT [--seconds 3] [--rate 20] [--width 320] [--height 240]
                                     [--storage mcap|sqlite3] [--topics image_raw,...]

Topics: `image_raw` (sensor_msgs/Image, bgr8), `image_raw/compressed` (the same frames as
JPEG), `cmd_vel` (geometry_msgs/Twist, a slow sine) at the frame rate, with header stamps equal
to the recording times. Written with `rosbags`, as a recording made elsewhere would be read.
"""
import argparse
import math
import sys
from pathlib import Path

import cv2
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from perception_rl.synthetic_scene import SyntheticScene

TOPICS = ('image_raw', 'image_raw/compressed', 'cmd_vel')
START_NS = 1_700_000_000 * 10**9
"""Recording time of the first message: an ordinary wall-clock time, far from zero."""


def make_bag(path: Path, seconds: float = 3.0, rate: float = 20.0, width: int = 320,
             height: int = 240, storage: str = 'mcap', topics=TOPICS) -> int:
    """Write the recording to `path` (which must not exist); returns the frames written."""
    store = get_typestore(Stores.ROS2_KILTED)
    t = store.types
    image_t, compressed_t = t['sensor_msgs/msg/Image'], t['sensor_msgs/msg/CompressedImage']
    twist_t, vector_t = t['geometry_msgs/msg/Twist'], t['geometry_msgs/msg/Vector3']
    header_t, time_t = t['std_msgs/msg/Header'], t['builtin_interfaces/msg/Time']
    types = {'image_raw': image_t.__msgtype__, 'image_raw/compressed': compressed_t.__msgtype__,
             'cmd_vel': twist_t.__msgtype__}
    scene = SyntheticScene(width, height, seed=0)
    frames = round(seconds * rate)
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    with Writer(path, version=8, storage_plugin=plugin) as writer:
        conns = {name: writer.add_connection(f'/{name}', types[name], typestore=store)
                 for name in topics}
        for i in range(frames):
            stamp = START_NS + round(i * 1e9 / rate)
            header = header_t(stamp=time_t(sec=stamp // 10**9, nanosec=stamp % 10**9),
                              frame_id='camera')
            frame = scene.step()
            messages = {}
            if 'image_raw' in conns:
                messages['image_raw'] = image_t(
                    header=header, height=height, width=width, encoding='bgr8',
                    is_bigendian=0, step=width * 3, data=frame.reshape(-1))
            if 'image_raw/compressed' in conns:
                ok, jpeg = cv2.imencode('.jpg', frame)
                assert ok
                messages['image_raw/compressed'] = compressed_t(
                    header=header, format='jpeg', data=jpeg.reshape(-1))
            if 'cmd_vel' in conns:
                speed = 0.2 * math.sin(2 * math.pi * i / frames)
                messages['cmd_vel'] = twist_t(linear=vector_t(x=speed, y=0.0, z=0.0),
                                              angular=vector_t(x=0.0, y=0.0, z=-speed))
            for name, msg in messages.items():
                writer.write(conns[name], stamp, store.serialize_cdr(msg, types[name]))
    return frames


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out', type=Path)
    parser.add_argument('--seconds', type=float, default=3.0)
    parser.add_argument('--rate', type=float, default=20.0)
    parser.add_argument('--width', type=int, default=320)
    parser.add_argument('--height', type=int, default=240)
    parser.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap')
    parser.add_argument('--topics', default=','.join(TOPICS))
    args = parser.parse_args(argv)
    frames = make_bag(args.out, args.seconds, args.rate, args.width, args.height, args.storage,
                      args.topics.split(','))
    print(f'{args.out}: {frames} frames at {args.rate:g} Hz, {args.width}x{args.height}')


if __name__ == '__main__':
    sys.exit(main())
