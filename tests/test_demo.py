"""`prediff demo`: files, scores, refusal to overwrite, the command line (tiny settings)."""

from __future__ import annotations

import json
import stat

import numpy as np
import pytest

pytest.importorskip("matplotlib")
PIL = pytest.importorskip("PIL.Image")

from prediff import cli, demo  # noqa: E402

TINY = dict(members=2, steps=3, num_sequences=2, progress=False, verbose=False)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"  # a folder the demo must create
    return demo.run_demo(out=out, **TINY)


def test_writes_pictures_and_scores(result):
    files = result.files
    assert set(files) == {"panel", "gif", "what_if", "scores"}
    for kind in ("panel", "what_if"):
        with PIL.open(files[kind]) as image:
            assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 300
    with PIL.open(files["gif"]) as image:
        assert image.format == "GIF" and image.n_frames == 8  # 4 context + 4 forecast frames
    record = json.loads(files["scores"].read_text())
    assert record["scores"] == json.loads(json.dumps(result.scores))
    assert set(record["what_if"]) == {"-4", "-2", "0", "2", "4"}
    assert record["settings"]["members"] == 2 and record["settings"]["seed"] == demo.DEMO_SEED
    # No temporary files left behind.
    assert sorted(p.name for p in files["panel"].parent.iterdir()) == sorted(demo.DEMO_FILES.values())


def test_scores_are_complete_and_consistent(result):
    ours, base = result.scores["prediff"], result.scores["persistence"]
    for key in ("mse", "mae", "crps", "csi_16", "csi_74", "intensity_error"):
        assert key in ours and key in base, key
    assert "intensity_error_controlled" in ours
    # The CRPS of a one-member "ensemble" is its MAE.
    assert base["crps"] == pytest.approx(base["mae"], rel=1e-6)
    assert ours["crps"] > 0 and ours["mse"] > 0 and ours["intensity_error"] >= 0
    assert all(0 <= ours[k] <= 1 for k in ("csi_16", "csi_74"))
    table = demo.format_scores(result.scores)
    assert "persistence" in table and "CRPS" in table and "intensity error, controlled" in table
    anticipated = [v["anticipated"] for v in result.what_if.values()]
    assert anticipated == sorted(anticipated)


def test_refuses_to_overwrite(result):
    out = result.files["panel"].parent
    before = result.files["panel"].read_bytes()
    with pytest.raises(FileExistsError, match="--overwrite"):
        demo.run_demo(out=out, **TINY)
    assert result.files["panel"].read_bytes() == before


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="members"):
        demo.run_demo(out=tmp_path, members=0)
    with pytest.raises(ValueError, match="steps"):
        demo.run_demo(out=tmp_path, steps=-1)
    with pytest.raises(ValueError, match="control_scale"):
        demo.run_demo(out=tmp_path, control_scale=float("nan"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="folder"):
        demo.run_demo(out=tmp_path / "file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_command_line(tmp_path, capsys, umask_027):
    out = tmp_path / "cli"
    argv = ["demo", "--out", str(out), "--members", "2", "--steps", "2", "--sequences", "1", "--no-progress"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "persistence" in printed and "MSE" in printed and str(out / "what_if.png") in printed
    before = (out / "scores.json").read_bytes()
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path  # what open() makes under umask 027
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("prediff demo: error:") and "--overwrite" in err, err
    assert (out / "scores.json").read_bytes() == before
    assert cli.main([*argv, "--overwrite"]) == 0


def test_scores_at_rain_rate_thresholds_are_tabled():
    """The score table takes the CSI thresholds the scores hold (rain rate for a radar pipeline)."""
    rng = np.random.default_rng(0)
    target = rng.gamma(0.5, 2.0, (1, 2, 8, 8, 1))
    ensemble = target[:, None] * rng.uniform(0.5, 1.5, (1, 3, 2, 8, 8, 1))
    scores = demo.forecast_scores(ensemble, target, thresholds=(1.0, 5.0))
    assert {"csi_1", "csi_5"} <= set(scores) and "csi_16" not in scores
    assert 0.0 < scores["csi_1"] <= 1.0
    table = demo.format_scores({"prediff": scores}, units="mm/h")
    assert "CSI >= 1 (ensemble mean)" in table and "CSI >= 5 (ensemble mean)" in table and "CSI >= 16" not in table
