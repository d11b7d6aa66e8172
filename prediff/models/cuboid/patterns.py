"""Named cuboid patterns: a name and an input shape give the settings of every layer of a stacked block.

Self-attention patterns map ``(T, H, W, C)`` to ``(cuboid_sizes, strategies, shifts)`` with one entry per
attention layer. Cross-attention patterns map the memory shape to ``(cuboid_hw, shift_hw, strategies,
n_temporal)``. The definitions are those of the official Earthformer code, so names in published configs
mean the same thing here.
"""

from __future__ import annotations

import re
from collections.abc import Callable

SelfPattern = tuple[list[tuple[int, int, int]], list[tuple[str, str, str]], list[tuple[int, int, int]]]
CrossPattern = tuple[list[tuple[int, int]], list[tuple[int, int]], list[tuple[str, str, str]], list[int]]

_LOCAL = ("l", "l", "l")
_DILATED = ("d", "d", "d")
_NO_SHIFT = (0, 0, 0)


def _full(T, H, W):
    return [(T, H, W)], [_LOCAL], [_NO_SHIFT]


def _axial(T, H, W):
    return [(T, 1, 1), (1, H, 1), (1, 1, W)], [_LOCAL] * 3, [_NO_SHIFT] * 3


def _divided_st(T, H, W):
    return [(T, 1, 1), (1, H, W)], [_LOCAL] * 2, [_NO_SHIFT] * 2


def _video_swin(P: int, M: int):
    def pattern(T, H, W):
        p, m = min(P, T), min(M, H, W)
        return [(p, m, m), (p, m, m)], [_LOCAL] * 2, [_NO_SHIFT, (p // 2, m // 2, m // 2)]

    return pattern


def _spatial_lg(M: int):
    def pattern(T, H, W):
        if H <= M and W <= M:
            return [(T, 1, 1), (1, H, W)], [_LOCAL] * 2, [_NO_SHIFT] * 2
        return [(T, 1, 1), (1, M, M), (1, M, M)], [_LOCAL, _LOCAL, _DILATED], [_NO_SHIFT] * 3

    return pattern


def _axial_space_dilate(K: int):
    def pattern(T, H, W):
        k = min(K, H, W)
        cuboids = [(T, 1, 1), (1, H // k, 1), (1, H // k, 1), (1, 1, W // k), (1, 1, W // k)]
        strategies = [_LOCAL, _DILATED, _LOCAL, _DILATED, _LOCAL]
        return cuboids, strategies, [_NO_SHIFT] * 5

    return pattern


SELF_PATTERNS: dict[str, Callable[[int, int, int], SelfPattern]] = {
    "full": _full,
    "axial": _axial,
    "divided_st": _divided_st,
    "video_swin": _video_swin(2, 4),
    "spatial_lg_v1": _spatial_lg(4),
}
for _p in (1, 2, 4, 8, 10):
    for _m in (1, 2, 4, 8, 16, 32):
        SELF_PATTERNS[f"video_swin_{_p}x{_m}"] = _video_swin(_p, _m)
for _m in (1, 2, 4, 8, 16, 32):
    SELF_PATTERNS[f"spatial_lg_{_m}"] = _spatial_lg(_m)
for _k in (2, 4, 8):
    SELF_PATTERNS[f"axial_space_dilate_{_k}"] = _axial_space_dilate(_k)


def _cross(K: int, variant: str):
    def pattern(T, H, W):
        k = min(K, H, W)
        if variant == "":
            return [(k, k)], [(0, 0)], [_LOCAL], [1]
        if variant == "_lg":
            return [(k, k), (k, k)], [(0, 0), (0, 0)], [_LOCAL, _DILATED], [1, 1]
        return [(k, k)] * 3, [(0, 0), (0, 0), (k // 2, k // 2)], [_LOCAL, _DILATED, _LOCAL], [1, 1, 1]

    return pattern


CROSS_PATTERNS: dict[str, Callable[[int, int, int], CrossPattern]] = {
    f"cross_{k}x{k}{variant}": _cross(k, variant) for k in (1, 2, 4, 8) for variant in ("", "_lg", "_heter")
}

_SHAPE = re.compile(r"^\d+$")


def _check_shape(shape) -> tuple[int, int, int]:
    if len(shape) != 4 or not all(int(v) > 0 for v in shape):
        raise ValueError(f"a pattern is evaluated on a shape (T, H, W, C) of positive sizes, got {tuple(shape)}")
    T, H, W, _ = (int(v) for v in shape)
    return T, H, W


_PATTERN_TABLES = {"self_pattern": SELF_PATTERNS, "cross_pattern": CROSS_PATTERNS}


def check_pattern_name(kind: str, name: str) -> str:
    """``name`` if it is a known pattern of ``kind`` ("self_pattern" or "cross_pattern"), else a ``ValueError``
    listing the known ones. Lets a network refuse a bad name before it builds the blocks that would use it."""
    table = _PATTERN_TABLES[kind]
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; expected one of {sorted(table)}")
    return name


def self_pattern(name: str, shape) -> SelfPattern:
    """Per-layer ``(cuboid_sizes, strategies, shifts)`` of the self-attention pattern ``name`` for ``(T,H,W,C)``."""
    return SELF_PATTERNS[check_pattern_name("self_pattern", name)](*_check_shape(shape))


def cross_pattern(name: str, mem_shape) -> CrossPattern:
    """Per-layer ``(cuboid_hw, shift_hw, strategies, n_temporal)`` of the cross pattern ``name``."""
    return CROSS_PATTERNS[check_pattern_name("cross_pattern", name)](*_check_shape(mem_shape))
