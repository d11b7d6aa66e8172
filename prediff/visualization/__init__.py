"""Pictures of forecasts: the SEVIR VIL and rain-rate colour maps, forecast panels, animated GIFs, what-if figures
and exceedance-probability maps.

matplotlib (and Pillow for GIFs) are imported only when a picture is drawn: ``pip install "prediff[plot]"``.
Figures are drawn by matplotlib's Agg renderer without pyplot, so the user's backend is left alone.
"""

from typing import TYPE_CHECKING

from ..utils.lazy import lazy_exports

if TYPE_CHECKING:
    from .animation import save_forecast_gif
    from .colormaps import (
        RAINRATE_COLORS,
        RAINRATE_LEVELS,
        VIL_COLORS,
        VIL_LEVELS,
        VIL_LEVELS_KG_M2,
        imshow_kwargs,
        rainrate_cmap,
        vil_cmap,
    )
    from .exceedance import exceedance_probability, plot_exceedance
    from .panels import plot_forecast_panel
    from .what_if import DEFAULT_N_SIGMAS, plot_what_if, sigma_label

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        ".animation": ["save_forecast_gif"],
        ".colormaps": [
            "RAINRATE_COLORS",
            "RAINRATE_LEVELS",
            "VIL_COLORS",
            "VIL_LEVELS",
            "VIL_LEVELS_KG_M2",
            "imshow_kwargs",
            "rainrate_cmap",
            "vil_cmap",
        ],
        ".exceedance": ["exceedance_probability", "plot_exceedance"],
        ".panels": ["plot_forecast_panel"],
        ".what_if": ["DEFAULT_N_SIGMAS", "plot_what_if", "sigma_label"],
    },
)

__all__ = [
    "DEFAULT_N_SIGMAS",
    "RAINRATE_COLORS",
    "RAINRATE_LEVELS",
    "VIL_COLORS",
    "VIL_LEVELS",
    "VIL_LEVELS_KG_M2",
    "exceedance_probability",
    "imshow_kwargs",
    "plot_exceedance",
    "plot_forecast_panel",
    "plot_what_if",
    "rainrate_cmap",
    "save_forecast_gif",
    "sigma_label",
    "vil_cmap",
]
