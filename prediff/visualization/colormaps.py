"""Colour maps: the SEVIR VIL map, a rain-rate map in pysteps' style, and a common way to get ``imshow`` arguments
for any data kind."""

from __future__ import annotations

from typing import Any

#: SEVIR VIL colours (RGB in [0, 1]), from the SEVIR dataset's display code: the first is the "bad" colour
#: (missing data), the others fill the bins between consecutive ``VIL_LEVELS``.
VIL_COLORS: tuple[tuple[float, float, float], ...] = (
    (0.0, 0.0, 0.0),
    (0.30196078431372547, 0.30196078431372547, 0.30196078431372547),
    (0.1568627450980392, 0.7450980392156863, 0.1568627450980392),
    (0.09803921568627451, 0.5882352941176471, 0.09803921568627451),
    (0.0392156862745098, 0.4117647058823529, 0.0392156862745098),
    (0.0392156862745098, 0.29411764705882354, 0.0392156862745098),
    (0.9607843137254902, 0.9607843137254902, 0.0),
    (0.9294117647058824, 0.6745098039215687, 0.0),
    (0.9411764705882353, 0.43137254901960786, 0.0),
    (0.6274509803921569, 0.0, 0.0),
    (0.9058823529411765, 0.0, 1.0),
)
#: Bin edges of the VIL colours, in digitised VIL units (0-255).
VIL_LEVELS: tuple[float, ...] = (0.0, 16.0, 31.0, 59.0, 74.0, 100.0, 133.0, 160.0, 181.0, 219.0, 255.0)
#: The same edges in kg m^-2 (SEVIR's decoding of the digitised values), for colour-bar labels.
VIL_LEVELS_KG_M2: tuple[float, ...] = (0.0, 0.15, 0.26, 0.53, 0.78, 1.51, 3.53, 7.07, 12.14, 32.23, 79.26)


#: Rain-rate bin edges in mm/h (logarithmic, as pysteps' default colour scale); below the first is dry.
RAINRATE_LEVELS: tuple[float, ...] = (
    0.08, 0.16, 0.25, 0.4, 0.63, 1.0, 1.6, 2.5, 4.0, 6.3, 10.0, 16.0, 25.0, 40.0, 63.0, 100.0, 160.0,
)  # fmt: skip
#: The colours of the bins between consecutive ``RAINRATE_LEVELS`` (pysteps' default scale: purples for drizzle,
#: blues and greens for moderate rain, yellow to red for heavy rain).
RAINRATE_COLORS: tuple[str, ...] = (
    "#9c7e94", "#640064", "#af00af", "#dc00dc", "#3232c8", "#0064ff", "#009696", "#00c832",
    "#64ff00", "#96ff00", "#c8ff00", "#ffff00", "#ffc800", "#ffa000", "#ff7d00", "#e11900",
)  # fmt: skip
#: Colour maps with fixed levels (``cmap`` names), their bin edges and colour-bar labels.
LEVEL_MAPS: dict[str, tuple[tuple[float, ...], str]] = {
    "vil": (VIL_LEVELS, "VIL (0-255)"),
    "rainrate": (RAINRATE_LEVELS, "rain rate (mm/h)"),
}


def rainrate_cmap() -> tuple[Any, Any]:
    """The rain-rate colour map and its boundary norm: ``(ListedColormap, BoundaryNorm)`` over
    ``RAINRATE_LEVELS`` (mm/h). Dry pixels (below 0.08 mm/h) are white, NaN (outside the radar domain) light
    grey, rates above 160 mm/h take the last colour."""
    from matplotlib.colors import BoundaryNorm, ListedColormap

    cmap = ListedColormap(RAINRATE_COLORS, name="rainrate").with_extremes(
        bad="#d9d9d9", under="white", over=RAINRATE_COLORS[-1]
    )
    return cmap, BoundaryNorm(RAINRATE_LEVELS, cmap.N)


def vil_cmap() -> tuple[Any, Any]:
    """The SEVIR VIL colour map and its boundary norm: ``(ListedColormap, BoundaryNorm)``.

    Ten colours for the ten bins of ``VIL_LEVELS``; values below 0 take the first bin's grey, values at or
    above 255 the last bin's magenta, NaN black. (The original SEVIR code dropped the last colour from the
    map and so fails on recent matplotlib; Earthformer keeps it, and so does this function.)
    """
    from matplotlib.colors import BoundaryNorm, ListedColormap

    bad, *colors = VIL_COLORS
    cmap = ListedColormap(colors, name="sevir_vil").with_extremes(bad=bad, under=colors[0], over=colors[-1])
    return cmap, BoundaryNorm(VIL_LEVELS, cmap.N)


def imshow_kwargs(cmap: str = "vil", vmin: float | None = None, vmax: float | None = None) -> dict[str, Any]:
    """Arguments for ``Axes.imshow``: the map and norm of a fixed-level map (``"vil"``, ``"rainrate"``), else a
    matplotlib map name.

    For a named map ``vmin``/``vmax`` fix the colour range (default: the data's range per image).
    """
    if cmap in LEVEL_MAPS:
        if vmin is not None or vmax is not None:
            raise ValueError(f"the {cmap!r} colour map has fixed levels; vmin and vmax must be None with it")
        levels_cmap, norm = vil_cmap() if cmap == "vil" else rainrate_cmap()
        return {"cmap": levels_cmap, "norm": norm}
    import matplotlib

    if cmap not in matplotlib.colormaps:
        raise ValueError(f"unknown colour map {cmap!r}: use 'vil', 'rainrate' or a matplotlib colour map name")
    return {"cmap": cmap, "vmin": vmin, "vmax": vmax}
