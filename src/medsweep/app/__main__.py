"""``python -m medsweep.app RUN``: serve the inference page with Streamlit on 127.0.0.1."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from medsweep.app import PAGE
from medsweep.predict import DEFAULT_MAX_PIXELS


def streamlit_command(args: argparse.Namespace) -> list[str]:
    """The ``streamlit run`` command line for ``args`` (local address, no telemetry)."""
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(PAGE),
        "--server.address",
        args.host,
        "--server.port",
        str(args.port),
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--server.runOnSave",
        "false",
        "--server.maxUploadSize",
        str(args.max_upload_mb),
        "--browser.gatherUsageStats",
        "false",
        "--client.showErrorDetails",
        "none",
        "--client.toolbarMode",
        "minimal",
        "--",
        "--max-pixels",
        str(args.max_pixels),
    ]
    return command + (["--run", str(args.run)] if args.run else [])


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and replace this process by the Streamlit server."""
    parser = argparse.ArgumentParser(
        prog="python -m medsweep.app",
        description="The inference web app on a run folder or a multirun folder.",
    )
    parser.add_argument("run", nargs="?", help="run or multirun folder")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to serve on (127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", type=int, default=8501)
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help="refuse images larger than this (width x height)",
    )
    parser.add_argument("--max-upload-mb", type=int, default=50, help="largest upload, in MB")
    args = parser.parse_args(argv)
    command = streamlit_command(args)
    os.execv(command[0], command)
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
