"""Parameter checks whose errors name the parameter, the value and what is allowed."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import torch

from .errors import InvalidType, InvalidValue

#: The largest float32: every float option ends up in float32 tensor arithmetic.
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise InvalidValue(f"{name}={value!r} is not known; choose one of: {', '.join(choices)}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidType(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int (numpy integers too) if it lies in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidType(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    value = int(value)
    if low is not None and value < low:
        raise InvalidValue(f"{name}={value} must be >= {low}")
    if high is not None and value > high:
        raise InvalidValue(f"{name}={value} must be <= {high}")
    return value


def check_float(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    high_open: bool = False,
    low_open: bool = False,
) -> float:
    """``value`` as a float if it is a finite number in the range (NaN and inf never are, nor
    anything past float32's range, where the arithmetic happens)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidType(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    try:
        value = float(value)
    except OverflowError:
        raise InvalidValue(f"{name}={value} is too large for a float") from None
    lo = "(" if low_open or low is None else "["
    hi = ")" if high_open or high is None else "]"
    allowed = f"{lo}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}{hi}"
    bad = (
        not math.isfinite(value)
        or (low is not None and (value < low or (low_open and value == low)))
        or (high is not None and (value > high or (high_open and value == high)))
    )
    if bad:
        raise InvalidValue(
            f"{name}={value} is not allowed: it must be a finite number in {allowed}"
        )
    if abs(value) > FLOAT32_MAX:
        raise InvalidValue(f"{name}={value} is beyond float32's range (at most {FLOAT32_MAX:.3g})")
    return value


def check_device(device: Any) -> torch.device:
    """``device`` parsed, if it is a real device that is available here."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InvalidValue(
            f"device={device!r} is not a device; use 'cpu', 'cuda' or 'cuda:N'"
        ) from None
    if parsed.type == "meta":
        raise InvalidValue("device='meta' holds no data: the statistics need a real device")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise InvalidValue(f"device={device!r} was asked for, but CUDA is not available here")
    return parsed
