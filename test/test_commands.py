"""Commands are clamped to their limits and always finite; the spec refuses bad settings."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from perception_rl.commands import TWIST_AXES, CommandSpec


def test_clamps_scales_and_zeroes_uncontrolled_axes():
    spec = CommandSpec(('linear.x', 'angular.z'), (0.2, 0.5))
    values = spec.command(np.array([3.0, -0.5]))
    assert values['linear.x'] == pytest.approx(0.2)
    assert values['angular.z'] == pytest.approx(-0.25)
    assert all(values[a] == 0.0 for a in TWIST_AXES if a not in spec.axes)


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=2, max_size=2))
def test_any_action_gives_a_finite_command_within_limits(action):
    spec = CommandSpec(('linear.x', 'angular.z'), (0.2, 0.5))
    values = spec.command(np.array(action))
    assert all(np.isfinite(v) for v in values.values())
    assert abs(values['linear.x']) <= 0.2 and abs(values['angular.z']) <= 0.5


@pytest.mark.parametrize('axes, limits, message', [
    (('linear.q',), (1.0,), 'unknown'),
    (('linear.x', 'linear.x'), (1.0, 1.0), 'twice'),
    (('linear.x',), (1.0, 2.0), 'one limit per'),
    (('linear.x',), (-1.0,), '> 0'),
    ((), (), 'at least one'),
])
def test_spec_refuses_bad_settings(axes, limits, message):
    with pytest.raises(ValueError, match=message):
        CommandSpec(axes, limits)
