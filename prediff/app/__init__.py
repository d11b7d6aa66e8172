"""`prediff app`: a page in the browser to see and steer a forecast (Gradio, ``pip install "prediff[app]"``).

[`prediff.app.forecast`] holds what the page computes (contexts, forecasts, pictures, scores, the netCDF download)
as plain functions; [`prediff.app.page`] lays them out; [`prediff.app.commands`] starts it.
"""

from typing import TYPE_CHECKING

from ..utils.lazy import lazy_exports

if TYPE_CHECKING:
    from .forecast import (
        DEFAULT_MAX_UPLOAD_MB,
        AppForecast,
        pipeline_choices,
        radar_context,
        render_forecast,
        render_what_if,
        run_app_forecast,
        score_forecast,
        storm_context,
        uploaded_context,
        write_forecast_netcdf,
    )
    from .page import build_page

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        ".forecast": [
            "DEFAULT_MAX_UPLOAD_MB",
            "AppForecast",
            "pipeline_choices",
            "radar_context",
            "render_forecast",
            "render_what_if",
            "run_app_forecast",
            "score_forecast",
            "storm_context",
            "uploaded_context",
            "write_forecast_netcdf",
        ],
        ".page": ["build_page"],
    },
)

__all__ = [
    "DEFAULT_MAX_UPLOAD_MB",
    "AppForecast",
    "build_page",
    "pipeline_choices",
    "radar_context",
    "render_forecast",
    "render_what_if",
    "run_app_forecast",
    "score_forecast",
    "storm_context",
    "uploaded_context",
    "write_forecast_netcdf",
]
