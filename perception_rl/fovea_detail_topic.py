"""The fovea_detail topic: where the fovea was and what it saw, one message per features message.

perception_node publishes it just before the features of the same frame, so the two carry the
same DDS publication sequence number; agent_node pairs them by that number. The message is a
std_msgs/Float32MultiArray of three labelled floats (standard types only: ARCHITECTURE.md).
"""
import math

from std_msgs.msg import Float32MultiArray, MultiArrayDimension

LABELS = ('centre_x', 'centre_y', 'detail')


def fovea_detail_message(centre: tuple[float, float], detail: float) -> Float32MultiArray:
    """The fovea centre (x, y in [-1, 1] of the frame) and its `fovea_detail`."""
    msg = Float32MultiArray(data=[float(centre[0]), float(centre[1]), float(detail)])
    msg.layout.dim = [MultiArrayDimension(label=','.join(LABELS), size=len(LABELS),
                                          stride=len(LABELS))]
    return msg


def read_fovea_detail(msg: Float32MultiArray) -> tuple[tuple[float, float], float]:
    """(centre, detail) of a message; ValueError saying what is wrong with a malformed one."""
    values = list(msg.data)
    if len(values) != len(LABELS):
        raise ValueError(f'need {len(LABELS)} floats ({", ".join(LABELS)}), got {len(values)}')
    x, y, detail = values
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f'non-finite value in {values}')
    if not (-1.0 <= x <= 1.0 and -1.0 <= y <= 1.0) or detail < 0.0:
        raise ValueError(f'centre ({x}, {y}) outside [-1, 1] or negative detail {detail}')
    return (x, y), detail
