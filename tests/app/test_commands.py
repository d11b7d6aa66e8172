"""`prediff app` on the command line: safe defaults, and bad options refused in one line before anything starts."""

from __future__ import annotations

import pytest

from prediff import cli
from tests.conftest import run_cli


def test_defaults_listen_locally_without_a_share_link():
    args = cli.build_parser().parse_args(["app"])
    assert (args.host, args.port, args.share, args.pipeline) == ("127.0.0.1", 7860, False, [])
    assert args.max_upload_mb == 64


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "0"], "--port must be in 1-65535, got 0"),
        (["--max-upload-mb", "-1"], "--max-upload-mb must be a positive number"),
        (["--pipeline", "{tmp}"], "is not a folder holding a saved pipeline"),
    ],
)
def test_bad_options_end_in_one_line(argv, message, tmp_path, capsys):
    pytest.importorskip("gradio")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert run_cli(["app", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prediff app: error:") and message in err and err.count("\n") == 1
