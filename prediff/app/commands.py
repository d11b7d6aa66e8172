"""`prediff app`: the page in the browser, started on this machine.

```
prediff app [--host 127.0.0.1] [--port 7860] [--pipeline DIR ...] [--max-upload-mb 64] [--share]
```

serves the page at http://127.0.0.1:7860: pick a shipped pipeline (or a folder given with --pipeline), a held-out
synthetic storm, a context file or radar files, the members, sampler and steps and the anticipated mean intensity,
and run; it shows the members, their mean, exceedance probabilities, an animation, scores against STEPS and
extrapolation when the future is known, and a what-if view, and downloads the ensemble as netCDF.

Safe by default: it listens on 127.0.0.1 only and makes no public link unless --share; uploads are limited to
--max-upload-mb and checked as `prediff forecast` checks its input; the page never reads a path typed into it;
forecasts run one at a time, in the order asked.
"""

from __future__ import annotations

import argparse
import math
import os

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "register", "run_app"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
#: Largest upload the page accepts by default, in MiB (a context of 4 frames of 1,000 x 1,000 float32 is 16 MiB).
DEFAULT_MAX_UPLOAD_MB = 64.0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `app` command to the `prediff` parser."""
    parser = subparsers.add_parser(
        "app",
        help="a page in the browser to see and steer a forecast (Gradio)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default: {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    parser.add_argument(
        "--pipeline",
        action="append",
        default=[],
        metavar="DIR",
        help="a saved pipeline folder to offer besides the shipped ones (repeatable)",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=DEFAULT_MAX_UPLOAD_MB,
        help=f"largest upload accepted, MiB (default: {DEFAULT_MAX_UPLOAD_MB:g})",
    )
    parser.add_argument("--share", action="store_true", help="also make a public Gradio share link (off by default)")
    parser.set_defaults(func=_app_command)


def run_app(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    pipelines: list[str] | None = None,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    share: bool = False,
) -> None:
    """Build the page and serve it until interrupted (see the module docstring).

    Raises:
        ImportError: Gradio is not installed.
        ValueError: a port outside 1-65535 or a non-positive upload limit.
        FileNotFoundError: a `--pipeline` folder holds no saved pipeline.
    """
    if not 0 < port < 65536:
        raise ValueError(f"--port must be in 1-65535, got {port}")
    if not (math.isfinite(max_upload_mb) and max_upload_mb > 0):
        raise ValueError(f"--max-upload-mb must be a positive number, got {max_upload_mb}")
    # The page calls nothing outside this machine: no usage statistics.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ImportError as error:
        raise ImportError(f'prediff app needs Gradio: pip install "prediff[app]" ({error})') from None
    from .forecast import pipeline_choices
    from .page import build_page

    page = build_page(pipeline_choices(pipelines or []), max_upload_mb=max_upload_mb)
    print(f"prediff app: http://{host}:{port} (Ctrl+C stops it)", flush=True)
    page.launch(
        server_name=host,
        server_port=port,
        share=share,
        max_file_size=int(max_upload_mb * 2**20),
        show_error=False,
        quiet=True,
    )


def _app_command(args: argparse.Namespace) -> int:
    run_app(args.host, args.port, args.pipeline, args.max_upload_mb, args.share)
    return 0
