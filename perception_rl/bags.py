"""rosbag2 recordings (MCAP or sqlite3; a directory or one file), read through `rosbags`.

`rosbag2_py` is not on PyPI; `rosbags` reads and writes the same files in pure Python. Bags
store absolute topic names; users may name them relative (`image_raw`), as the nodes do.
"""
import importlib
from pathlib import Path

from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import Connection
from rosbags.typesys import Stores, get_typestore

TYPESTORE = Stores.ROS2_KILTED
"""Message definitions for bags that carry none of their own (ROS 2 bags normally do)."""
IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')


class BagError(ValueError):
    """A bag that cannot be read, or lacks what was asked of it; the message says what it holds."""


def absolute(topic: str) -> str:
    """A topic name as a bag stores it: `image_raw` -> `/image_raw`."""
    return topic if topic.startswith('/') else f'/{topic}'


def message_class(msgtype: str):
    """rclpy's message class of 'pkg/msg/Name', or None when its package is not installed."""
    try:
        package, kind, name = msgtype.split('/')
        return getattr(importlib.import_module(f'{package}.{kind}'), name)
    except (ValueError, ImportError, AttributeError):
        return None


def open_bag(path: str | Path) -> AnyReader:
    """An open reader of the rosbag2 at `path`; BagError saying why it cannot be read."""
    path = Path(path)
    if not path.exists():
        raise BagError(f'{path} does not exist (give a rosbag2 directory, an .mcap or a .db3 '
                       'file)')
    try:
        reader = AnyReader([path], default_typestore=get_typestore(TYPESTORE))
        reader.open()
    except (AnyReaderError, OSError) as error:
        raise BagError(f'cannot read {path} as a rosbag2 recording: {error}') from None
    return reader


def contents(reader: AnyReader) -> str:
    """What the bag holds: each topic with its type and message count."""
    topics = reader.topics
    if not topics:
        return 'the bag holds no topics'
    return 'the bag holds ' + ', '.join(f'{name} ({info.msgtype}, {info.msgcount} messages)'
                                        for name, info in sorted(topics.items()))


def connections(reader: AnyReader, topics: list[str]) -> list[Connection]:
    """The connections of `topics` (all of the bag's for an empty list).

    BagError names the topics the bag lacks and lists what it holds.
    """
    if not topics:
        return list(reader.connections)
    wanted = {absolute(t) for t in topics}
    missing = sorted(wanted - set(reader.topics))
    if missing:
        raise BagError(f'no topic {", ".join(missing)} in {reader.paths[0]}; {contents(reader)}')
    return [c for c in reader.connections if c.topic in wanted]


def image_topic(reader: AnyReader, topic: str = '') -> str:
    """The image topic to learn from: `topic`, or else image_raw, or else image_raw/compressed.

    BagError when it is missing or holds no images, listing what the bag holds.
    """
    topics = reader.topics
    candidates = [absolute(topic)] if topic else ['/image_raw', '/image_raw/compressed']
    for name in candidates:
        info = topics.get(name)
        if info is not None and info.msgtype in IMAGE_TYPES:
            return name
    asked = ' or '.join(candidates)
    found = topics.get(candidates[0])
    if topic and found is not None:
        raise BagError(f'{asked} holds {found.msgtype}, not one of {list(IMAGE_TYPES)}; '
                       f'{contents(reader)}')
    raise BagError(f'no image topic {asked} in {reader.paths[0]}; {contents(reader)}')
