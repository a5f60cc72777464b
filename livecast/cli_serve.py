"""``livecast serve``: start the HTTP service (BentoML) on the champion bundle or a given one."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from livecast.config import PROJECT_ROOT, get_settings

SERVICE = "serving.service:Livecast"


def serve(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 3000,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    bundle: Annotated[
        Path | None,
        typer.Option(
            help="A forecaster bundle folder (models/forecaster-<id>) or a models folder "
            "(its champion). Default: the settings' models folder champion."
        ),
    ] = None,
    tier_bundle: Annotated[
        Path | None,
        typer.Option(help="A fan-tier bundle or models folder (default: the models folder)."),
    ] = None,
) -> None:
    """Serve forecasts, comparisons, suggestions, reviews, fan tiers and the planner page."""
    from training.bundle import BUNDLE_FILE, champion_path

    target = bundle or get_settings().models_dir
    resolved = target
    if not (target / BUNDLE_FILE).exists():
        try:
            resolved = champion_path(target)
        except FileNotFoundError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2) from exc
    if not (resolved / BUNDLE_FILE).exists():
        typer.echo(f"error: {resolved}: not a model bundle (no {BUNDLE_FILE})", err=True)
        raise typer.Exit(code=2)
    env = dict(os.environ)
    env["LIVECAST_SERVE_BUNDLE"] = str(resolved.resolve())
    if tier_bundle is not None:
        env["LIVECAST_SERVE_TIER_BUNDLE"] = str(tier_bundle.resolve())
    cmd = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        SERVICE,
        "--host",
        host,
        "--port",
        str(port),
        "--working-dir",
        str(PROJECT_ROOT),
    ]
    typer.echo(f"serving {resolved.name} on http://{host}:{port} (planner page at /)")
    sys.stdout.flush()
    os.execve(sys.executable, cmd, env)  # the server replaces this process (signals reach it)
