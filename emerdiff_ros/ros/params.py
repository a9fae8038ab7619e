"""ROS parameters generated from the settings dataclasses (one mapping, never a copy)."""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter

from ..engine.config import ParamSpec, param_specs


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    text = spec.description + (f" (one of: {', '.join(spec.choices)})" if spec.choices else "")
    result = ParameterDescriptor(description=text, read_only=spec.read_only)
    if spec.low is not None and spec.type is int:
        result.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=0)]
    elif spec.low is not None and spec.type is float:
        result.floating_point_range = [FloatingPointRange(from_value=float(spec.low), to_value=float(spec.high),
                                                          step=0.0)]
    return result


def ros_value(spec: ParamSpec, value: Any) -> Any:
    if spec.type is tuple and spec.item is str and not value:
        return Parameter.Type.STRING_ARRAY  # an empty list would be declared as a byte array
    return list(value) if spec.type is tuple else value


def declare_settings(node: Node, cls, defaults) -> Any:
    """Declare one parameter per field of cls (defaults from the `defaults` instance) and build cls from them.

    Raises ValueError with the reason when a value (from a parameter file or the command line) is invalid.
    """
    values = {}
    for spec in param_specs(cls):
        declared = node.declare_parameter(spec.name, ros_value(spec, getattr(defaults, spec.attr)), descriptor(spec))
        value = declared.value
        values[spec.attr] = tuple(value or ()) if spec.type is tuple else value
    return cls(**values)


def changes_for(cls, params) -> dict[str, Any]:
    """Attribute changes of cls that a list of rclpy Parameters asks for."""
    by_name = {spec.name: spec for spec in param_specs(cls)}
    return {by_name[p.name].attr: tuple(p.value) if by_name[p.name].type is tuple else p.value
            for p in params if p.name in by_name}
