"""Validation helpers shared by the frozen config dataclasses of :mod:`ctrnet_ros.net`."""

from __future__ import annotations

__all__ = ["coerce_tuple_field"]


def coerce_tuple_field(config, name: str, length: int, kind: type) -> None:
    """Turn ``config.<name>`` into a ``length``-tuple of ``kind`` on a frozen dataclass, in place.

    Lists come back from checkpoints, JSON and YAML; configs keep tuples so they stay hashable.
    Raises ValueError naming the field when the value does not fit.
    """
    value = getattr(config, name)
    try:
        value = tuple(kind(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a sequence of {length} {kind.__name__}, got {value!r}") from exc
    if len(value) != length:
        raise ValueError(f"{name} must have {length} entries, got {value!r}")
    object.__setattr__(config, name, value)
