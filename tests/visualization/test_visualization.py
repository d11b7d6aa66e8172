"""Pictures: VIL colour map, forecast panel, animated GIF and what-if figure, rendered to real files."""

from __future__ import annotations

import stat

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")

from prediff.visualization import (  # noqa: E402
    DEFAULT_N_SIGMAS,
    VIL_COLORS,
    VIL_LEVELS,
    imshow_kwargs,
    plot_forecast_panel,
    plot_what_if,
    save_forecast_gif,
    sigma_label,
    vil_cmap,
)

MAGENTA = tuple(round(255 * v) for v in VIL_COLORS[-1])


def _storm(num_frames, size=16, peak=250.0):
    yy, xx = np.mgrid[0:size, 0:size]
    return np.stack([peak * np.exp(-((xx - 4 - t) ** 2 + (yy - 6) ** 2) / 8.0) for t in range(num_frames)])[..., None]


def _axes_texts(fig):
    grid = fig.axes[:-1]  # the last axes is the colour bar
    titles = [ax.get_title() for ax in grid]
    labels = [ax.get_ylabel() for ax in grid]
    return titles, labels


def test_vil_colormap_levels_and_colours():
    cmap, norm = vil_cmap()
    assert cmap.N == 10 and list(norm.boundaries) == list(VIL_LEVELS)
    rgba = cmap(norm(np.array([0.0, 20.0, 80.0, 140.0, 230.0, 255.0, 300.0])))
    expected = [VIL_COLORS[1], VIL_COLORS[2], VIL_COLORS[5], VIL_COLORS[7], VIL_COLORS[10], VIL_COLORS[10]]
    np.testing.assert_allclose(rgba[:6, :3], expected)
    np.testing.assert_allclose(rgba[6, :3], VIL_COLORS[10])  # above 255: "over" colour
    np.testing.assert_allclose(cmap(np.ma.masked_invalid([np.nan]))[0, :3], VIL_COLORS[0])  # missing: black
    assert imshow_kwargs("viridis", 0, 1) == {"cmap": "viridis", "vmin": 0, "vmax": 1}
    with pytest.raises(ValueError, match="fixed levels"):
        imshow_kwargs("vil", vmin=0)
    with pytest.raises(ValueError, match="unknown colour map"):
        imshow_kwargs("not-a-map")


def test_forecast_panel(tmp_path, umask_027):
    seq = _storm(7)
    context, target = seq[:4], seq[4:]
    ensemble = np.stack([target, target * 0.5, target * 0.8])
    path = tmp_path / "panel.png"
    fig = plot_forecast_panel(
        torch.from_numpy(context), target, ensemble, max_members=2, interval_minutes=5, path=path, dpi=50
    )
    titles, labels = _axes_texts(fig)
    assert ["-15 min", "-10 min", "-5 min", "0 min"] == titles[:4]
    assert "+15 min" in titles and "+20 min" not in titles
    assert [label for label in labels if label] == [
        "Context",
        "Observed",
        "Member 1",
        "Member 2",
        "Mean of 3",
    ]
    with Image.open(path) as image:
        width, height = image.size
        colours = {tuple(c) for c in np.asarray(image.convert("RGB")).reshape(-1, 3)}
    assert MAGENTA in colours  # the peak of 250 is drawn in the VIL map's top colour
    small = plot_forecast_panel(context, target, path=tmp_path / "small.png", dpi=50)
    with Image.open(tmp_path / "small.png") as image:
        assert image.size[1] < height  # two rows instead of five
    assert len(small.axes) == 2 * 4 + 1  # grid + colour bar
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # what open() makes under umask 027
    assert sorted(p.name for p in tmp_path.iterdir()) == ["panel.png", "small.png"]  # no temporary files left
    plot_forecast_panel(context[..., 0], cmap="viridis", path=tmp_path / "ctx.pdf")
    assert (tmp_path / "ctx.pdf").read_bytes()[:4] == b"%PDF"
    assert width > 0


def test_forecast_panel_errors(tmp_path):
    seq = _storm(6)
    with pytest.raises(ValueError, match="lead times"):
        plot_forecast_panel(seq[:3], seq[3:], seq[None, 3:5])
    with pytest.raises(ValueError, match="frame sizes differ"):
        plot_forecast_panel(seq[:3], _storm(3, size=12))
    with pytest.raises(ValueError, match="context must have 3 dimensions"):
        plot_forecast_panel(seq[0, ..., 0])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plot_forecast_panel(seq[:3], path=tmp_path / "missing" / "panel.png")
    with pytest.raises(ValueError, match="cannot write a figure"):
        plot_forecast_panel(seq[:3], path=tmp_path / "panel.xyz")


def test_forecast_gif(tmp_path):
    seq = _storm(7)
    context, target = seq[:4], seq[4:]
    ensemble = np.stack([target, target * 0.7])
    path = save_forecast_gif(tmp_path / "forecast.gif", context, target, ensemble, frame_duration_ms=120, dpi=40)
    with Image.open(path) as gif:
        assert gif.n_frames == 4 + 3
        assert gif.info["loop"] == 0 and gif.info["duration"] == 120
        size = gif.size
        gif.seek(gif.n_frames - 1)
        colours = {tuple(c) for c in np.asarray(gif.convert("RGB")).reshape(-1, 3)}
    assert MAGENTA in colours
    # Observed + 2 members + mean = 4 panels; a deterministic forecast alone is narrower.
    narrow = save_forecast_gif(tmp_path / "one.gif", context, ensemble=target[None], dpi=40)
    with Image.open(narrow) as gif:
        assert gif.size[0] < size[0] and gif.n_frames == 7
    with pytest.raises(ValueError, match=r"\.gif"):
        save_forecast_gif(tmp_path / "forecast.png", context, target)
    with pytest.raises(ValueError, match="nothing to animate"):
        save_forecast_gif(tmp_path / "x.gif", context)


def test_what_if_figure(tmp_path):
    seq = _storm(7)
    context, target = seq[:4], seq[4:]
    forecasts = {n: np.clip(target * (1 + 0.2 * n), 0, 255) for n in DEFAULT_N_SIGMAS}
    path = tmp_path / "what_if.png"
    fig = plot_what_if(
        context,
        forecasts,
        mu=40.0,
        sigma=8.0,
        target=target,
        uncontrolled=target,
        num_context=2,
        path=path,
        dpi=50,
    )
    titles, labels = _axes_texts(fig)
    labels = [label for label in labels if label]
    assert len(labels) == 1 + 1 + 1 + 5
    assert labels[3].startswith("μ − 4σ = 8.0\nmean ") and labels[5].startswith("μ = 40.0")
    assert labels[7].startswith("μ + 4σ = 72.0")
    mean = forecasts[4.0].mean()
    assert labels[7].endswith(f"mean {mean:.1f}")
    assert titles[:2] == ["-10 min", "0 min"]
    with Image.open(path) as image:
        assert image.size[1] > image.size[0]  # 8 rows of 3 columns
    # An array aligned with n_sigmas and a custom set of n.
    stacked = np.stack([forecasts[n] for n in (-2.0, 2.0)])
    fig = plot_what_if(context, stacked, n_sigmas=(-2, 2))
    assert [label for label in _axes_texts(fig)[1] if label][1:] == [
        f"μ − 2σ\nmean {forecasts[-2.0].mean():.1f}",
        f"μ + 2σ\nmean {forecasts[2.0].mean():.1f}",
    ]
    with pytest.raises(ValueError, match="n_sigmas"):
        plot_what_if(context, stacked)
    with pytest.raises(ValueError, match="both mu and sigma"):
        plot_what_if(context, stacked, n_sigmas=(-2, 2), mu=1.0)
    with pytest.raises(ValueError, match="expected"):
        plot_what_if(context, [target, target[:2]], n_sigmas=(0, 1))
    assert sigma_label(0) == "μ" and sigma_label(-4) == "μ − 4σ" and sigma_label(2.5) == "μ + 2.5σ"


def test_rain_rate_pictures_and_exceedance_probability(tmp_path):
    from prediff.visualization import (
        RAINRATE_LEVELS,
        exceedance_probability,
        imshow_kwargs,
        plot_exceedance,
        plot_forecast_panel,
    )

    rng = np.random.default_rng(0)
    ensemble = np.exp(rng.normal(0, 1.5, (4, 3, 16, 16, 1))).astype(np.float32)
    ensemble[:, :, :3, :3] = np.nan  # outside the radar domain
    probability = exceedance_probability(ensemble, 1.0)
    # A plain count per pixel: the share of members at or above 1 mm/h.
    expected = (ensemble[..., 0] >= 1.0).mean(axis=0)
    np.testing.assert_allclose(probability[:, 3:, 3:], expected[:, 3:, 3:])
    assert np.isnan(probability[:, :3, :3]).all() and probability.shape == (3, 16, 16)
    style = imshow_kwargs("rainrate")
    assert list(style["norm"].boundaries) == list(RAINRATE_LEVELS)
    with pytest.raises(ValueError, match="'rainrate' colour map has fixed levels"):
        imshow_kwargs("rainrate", vmin=0)
    figure = plot_exceedance(ensemble, 1.0, path=tmp_path / "exceedance.png")
    assert (tmp_path / "exceedance.png").stat().st_size > 0 and len(figure.axes) == 4  # 3 maps and a colour bar
    plot_forecast_panel(ensemble[0], None, ensemble, cmap="rainrate", path=tmp_path / "panel.png")
    assert (tmp_path / "panel.png").stat().st_size > 0
    with pytest.raises(ValueError, match="ensemble must have shape"):
        exceedance_probability(np.zeros((3, 4, 4)), 1.0)
