"""``livecast serve``: start the HTTP service (BentoML) on the champion bundle, a given bundle
folder or the bundle of a registered MLflow model version."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from livecast.config import PROJECT_ROOT, get_settings

SERVICE = "serving.service:Livecast"


def resolve_bundle(bundle: Path | None, model_version: str | None, target: str) -> Path:
    """The forecaster bundle folder to serve: a registered model version's, the given folder,
    or the champion of a models folder (default: the settings' models folder).

    The bundle is verified (``bundle.json`` and file checksums, no LightGBM) here, in the CLI
    process: a damaged bundle is an error before the server starts, not a worker that crashes
    at every restart. Raises ``ValueError`` (``BundleError`` for a damaged bundle) or
    ``FileNotFoundError`` with a message for the user.
    """
    from training.bundle import BUNDLE_FILE, champion_path, verify_bundle, version_bundle

    s = get_settings()
    if model_version is not None:
        if bundle is not None:
            raise ValueError("--bundle and --model-version are mutually exclusive")
        resolved = version_bundle(
            model_version, target=target, uri=s.mlflow_uri, models_dir=s.models_dir
        )
    else:
        folder = bundle or s.models_dir
        resolved = folder if (folder / BUNDLE_FILE).exists() else champion_path(folder)
        if not (resolved / BUNDLE_FILE).exists():
            raise FileNotFoundError(f"{resolved}: not a model bundle (no {BUNDLE_FILE})")
    verify_bundle(resolved)
    return resolved


def check_tier_bundle(tier_bundle: Path | None) -> str | None:
    """Why the service will answer ``/v1/segment`` with 503 (a damaged or unusable tier
    bundle), or None. A missing default tier bundle is not reported: the tier model is
    optional."""
    from training.tiers import verify_tier_bundle

    try:
        verify_tier_bundle(tier_bundle or get_settings().models_dir)
    except FileNotFoundError as exc:
        return str(exc) if tier_bundle is not None else None
    except ValueError as exc:
        return str(exc)
    return None


def port_problem(host: str, port: int) -> str | None:
    """Why the server could not listen on ``host:port`` (taken, or not an address of this
    machine), or None: checked before the server starts, so a taken port is a clear error at
    once instead of a worker dying later (or an old server answering in its place)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"cannot listen on {host}:{port}: {exc.strerror}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            probe.bind(address)
        except OSError as exc:
            return (
                f"cannot listen on {host}:{port}: {exc.strerror} (another server, perhaps an "
                "earlier livecast serve, holds it: stop it or choose --port)"
            )
    return None


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
    model_version: Annotated[
        str | None,
        typer.Option(
            help="Serve the bundle of a registered model version: a number (3) or an alias "
            "(@champion). The local export is used, else the MLflow run's bundle artifact."
        ),
    ] = None,
    target: Annotated[
        str,
        typer.Option(
            help="Target whose registered model (livecast-<target>) --model-version names: "
            "viewers, orders or gmv."
        ),
    ] = "gmv",
) -> None:
    """Serve forecasts, comparisons, suggestions, reviews, fan tiers and the planner page."""
    try:
        resolved = resolve_bundle(bundle, model_version, target)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    taken = port_problem(host, port)
    if taken is not None:
        typer.echo(f"error: {taken}", err=True)
        raise typer.Exit(code=2)
    tier_problem = check_tier_bundle(tier_bundle)
    if tier_problem is not None:  # the forecasts are still served
        typer.echo(f"warning: /v1/segment will answer 503: {tier_problem}", err=True)
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
