"""Validation pictures of the trainers: PNG files under `output_dir/validation/`, also sent to tensorboard when
it logs; skipped, with one warning, when matplotlib is not installed."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["ValidationPictures"]


class ValidationPictures:
    """The validation pictures of a [`Trainer`] (which provides the attributes annotated here)."""

    output_dir: Path
    tensorboard: bool
    accelerator: Any
    value_range: tuple[float, float]

    def picture_path(self, tag: str, step: int) -> Path:
        """Where the validation picture `tag` of `step` is written (PNG under `validation/`)."""
        folder = self.output_dir / "validation"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{tag.replace('/', '_')}-{step:07d}.png"

    def log_figure(self, tag: str, figure: Any, step: int) -> None:
        """Send a matplotlib figure (already written under `validation/`) to tensorboard when it is on."""
        if self.tensorboard:
            figure.canvas.draw()
            image = np.asarray(figure.canvas.buffer_rgba())[..., :3]
            writer = self.accelerator.get_tracker("tensorboard", unwrap=True)
            writer.add_image(tag, image, step, dataformats="HWC")

    def plotting_available(self) -> bool:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            if not getattr(self, "_warned_plot", False):
                warnings.warn(
                    'validation pictures are skipped: matplotlib is not installed (pip install "prediff[plot]")',
                    stacklevel=2,
                )
                self._warned_plot = True
            return False
        return True

    def save_validation_panel(self, name: str, step: int, context: torch.Tensor, title: str, **panel: Any) -> None:
        """Draw `plot_forecast_panel(context, **panel)` (physical units) in the data's colour map, write it as the
        picture `name` of `step` and log it as `val/{name}`."""
        from ..visualization import plot_forecast_panel

        lo, hi = self.value_range
        linear_vil = (lo, hi) == (0.0, 255.0) and self.scaling.value_transform is None
        cmap = "vil" if linear_vil else "viridis"
        figure = plot_forecast_panel(context, cmap=cmap, title=title, path=self.picture_path(name, step), **panel)
        self.log_figure(f"val/{name}", figure, step)
