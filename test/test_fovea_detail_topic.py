"""The fovea_detail message: what perception_node writes, agent_node reads back; anything else
is refused with a reason."""
import math

import pytest
from std_msgs.msg import Float32MultiArray

from perception_rl.fovea_detail_topic import fovea_detail_message, read_fovea_detail


def test_a_message_reads_back_what_was_written():
    centre, detail = read_fovea_detail(fovea_detail_message((-0.5, 1.0), 0.03125))
    assert centre == (-0.5, 1.0) and detail == 0.03125


@pytest.mark.parametrize('data, reason', [
    ([0.0, 0.0], 'need 3 floats'),
    ([0.0, math.nan, 0.1], 'non-finite'),
    ([1.5, 0.0, 0.1], 'outside'),
    ([0.0, 0.0, -0.1], 'negative detail'),
])
def test_malformed_messages_are_refused_with_the_reason(data, reason):
    with pytest.raises(ValueError, match=reason):
        read_fovea_detail(Float32MultiArray(data=data))
