"""Argument checks shared by the ops: one place that turns bad user values into clear errors."""

from collections.abc import Sequence

import jax


def pair(value, name: str) -> tuple[int, int]:
    """An int or a pair of ints -> (height, width) pair of positive ints; a size of an image of symbolic size
    (jax.export, segjax-export) is taken as it is."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        not isinstance(value, Sequence)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) or jax.export.is_symbolic_dim(v) for v in value)
    ):
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {value!r}.")
    if any(jax.export.is_symbolic_dim(v) for v in value):
        return tuple(value)  # positive by construction: a size of a symbolic shape
    if min(value) < 1:
        raise ValueError(f"{name} must be positive, got {value!r}.")
    return tuple(value)


def factor_int(factor, name: str = "factor") -> int:
    """A positive integer upsampling factor."""
    if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
        raise ValueError(f"{name} must be a positive int (2 doubles height and width), got {factor!r}.")
    return factor


def nhwc(x, name: str = "x"):
    """Checks that x is a rank-4 NHWC array."""
    if x.ndim != 4:
        raise ValueError(f"{name} must be NHWC (rank 4), got shape {tuple(x.shape)}.")
    return x
