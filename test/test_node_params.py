"""Parameter specs: ints accepted as floats, and errors that name the parameter and its values."""
import pytest

from perception_rl.node_params import ParameterError, ParamSpec


def test_an_int_is_accepted_where_a_float_is_expected():
    assert ParamSpec('framerate', 20.0, '', low=0.1, high=240.0).coerce(30) == 30.0
    assert ParamSpec('axis_limits', (0.2, 0.5), '', low=1e-6).coerce([1, 2]) == [1.0, 2.0]


@pytest.mark.parametrize('spec, value, message', [
    (ParamSpec('framerate', 20.0, '', low=0.1, high=240.0), 0.0, r"'framerate'.*\[0.1, 240.0\]"),
    (ParamSpec('framerate', 20.0, '', low=0.1, high=240.0), 'fast', "'framerate'.*float"),
    (ParamSpec('device', 'cpu', '', choices=('cpu', 'cuda')), 'tpu', r"'device'.*\['cpu'"),
    (ParamSpec('seed', 0, '', low=0, high=10), 1.5, "'seed'.*int"),
    (ParamSpec('train', True, ''), 1, "'train'.*bool"),
    (ParamSpec('framerate', 20.0, '', low=0.1), float('nan'), "'framerate'"),
])
def test_invalid_values_are_refused_by_name(spec, value, message):
    with pytest.raises(ParameterError, match=message):
        spec.coerce(value)


def test_an_empty_default_list_is_a_list_of_names():
    topics = ParamSpec('topics', (), '')
    assert topics.accepts() == 'string list'
    assert topics.coerce([]) == [] and topics.coerce(['image_raw']) == ['image_raw']
    with pytest.raises(ParameterError, match="'topics'"):
        topics.coerce([1])
