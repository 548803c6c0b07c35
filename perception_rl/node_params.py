"""Declaring, validating and live-updating node parameters from one table per node."""
from dataclasses import dataclass
from typing import Any, Callable

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.exceptions import InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter


class ParameterError(ValueError):
    """A parameter value the node cannot work with; the message names it and what it accepts."""


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: its default (whose type is the parameter's), meaning and valid values."""

    name: str
    default: Any
    description: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    dynamic: bool = False
    """Whether `ros2 param set` may change it while the node runs."""
    check: Callable[[Any], object] | None = None
    """Further validation of the value: raises ValueError saying what is wrong."""

    def accepts(self) -> str:
        """What this parameter accepts, in words."""
        kind = _kind(self.default)
        if self.choices:
            return f'one of {list(self.choices)}'
        bounds = ''
        if self.low is not None or self.high is not None:
            bounds = f' in [{self.low if self.low is not None else "-inf"}, ' \
                     f'{self.high if self.high is not None else "inf"}]'
        return f'{kind}{bounds}'

    def coerce(self, value: Any) -> Any:
        """The value in this parameter's type, or ParameterError naming the parameter."""
        expected = _kind(self.default)
        try:
            value = _convert(value, expected)
        except (TypeError, ValueError):
            raise ParameterError(f"parameter '{self.name}' got {value!r}; "
                                 f'it accepts {self.accepts()}') from None
        items = value if isinstance(value, list) else [value]
        for item in items:
            if self.choices and item not in self.choices:
                raise ParameterError(f"parameter '{self.name}' got {item!r}; "
                                     f'it accepts {self.accepts()}')
            if isinstance(item, (int, float)) and not isinstance(item, bool) and (
                    (self.low is not None and not item >= self.low)
                    or (self.high is not None and not item <= self.high)):
                raise ParameterError(f"parameter '{self.name}' got {item!r}; "
                                     f'it accepts {self.accepts()}')
        if self.check is not None:
            try:
                self.check(value)
            except ValueError as error:
                raise ParameterError(f"parameter '{self.name}' got {value!r}: {error}") from None
        return value


def _kind(default: Any) -> str:
    if isinstance(default, bool):
        return 'bool'
    if isinstance(default, int):
        return 'int'
    if isinstance(default, float):
        return 'float'
    if isinstance(default, str):
        return 'string'
    if isinstance(default, (list, tuple)):  # an empty default is a list of names (topics)
        return f'{_kind(default[0]) if default else "string"} list'
    raise TypeError(f'no parameter kind for {default!r}')


def _convert(value: Any, kind: str) -> Any:
    if kind.endswith(' list'):
        if isinstance(value, (str, bytes)) or not hasattr(value, '__iter__'):
            raise TypeError(value)
        return [_convert(v, kind[:-5]) for v in value]
    if kind == 'bool':
        if not isinstance(value, bool):
            raise TypeError(value)
        return value
    if kind == 'int':
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(value)
        return value
    if kind == 'float':  # an int is a fine float (a YAML `20` for `framerate`)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(value)
        return float(value)
    if not isinstance(value, str):
        raise TypeError(value)
    return value


def declare_parameters(node: Node, specs: list[ParamSpec],
                       on_change: Callable[[str, Any], None] | None = None) -> dict[str, Any]:
    """Declare every spec on the node and return the validated values by name.

    Raises ParameterError at start-up for an invalid value. Later changes are validated the
    same way and refused with the reason; accepted changes of dynamic parameters are passed
    to `on_change(name, value)`.
    """
    by_name = {spec.name: spec for spec in specs}
    values = {}
    for spec in specs:
        descriptor = ParameterDescriptor(
            description=spec.description, read_only=not spec.dynamic,
            additional_constraints=f'accepts {spec.accepts()}',
            # Typing is checked by ParamSpec.coerce, which also takes an int for a float.
            dynamic_typing=True)
        if spec.low is not None and spec.high is not None and isinstance(spec.default, int) \
                and not isinstance(spec.default, bool):
            descriptor.integer_range = [IntegerRange(
                from_value=int(spec.low), to_value=int(spec.high), step=0)]
        elif spec.low is not None and spec.high is not None and isinstance(spec.default, float):
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=float(spec.low), to_value=float(spec.high), step=0.0)]
        default = list(spec.default) if isinstance(spec.default, tuple) else spec.default
        try:
            value = node.declare_parameter(spec.name, default, descriptor).value
        except InvalidParameterValueException as error:  # rclpy's own range check
            raise ParameterError(f"parameter '{spec.name}': {error.args[0]}; "
                                 f'it accepts {spec.accepts()}') from None
        values[spec.name] = spec.coerce(value)

    def validate(params: list[Parameter]) -> SetParametersResult:
        for param in params:
            spec = by_name.get(param.name)
            if spec is None:
                continue
            try:
                spec.coerce(param.value)
            except ParameterError as error:
                return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)

    def apply(params: list[Parameter]) -> None:
        for param in params:
            spec = by_name.get(param.name)
            if spec is not None and spec.dynamic and on_change is not None:
                on_change(param.name, spec.coerce(param.value))

    node.add_on_set_parameters_callback(validate)
    node.add_post_set_parameters_callback(apply)
    return values
