"""`campaign serve`: MLflow's scoring server for a saved or logged model, started so that it works from any shell.

`mlflow models serve -m MODEL --env-manager local` starts its web server with the shell command `exec uvicorn ...`
(`mlflow.pyfunc.scoring_server.get_cmd`), so it finds `uvicorn` only when the scripts folder of the Python
environment is on PATH, as in an activated virtual environment; `.venv/bin/mlflow models serve` from a plain shell
fails with `uvicorn: not found`. No code of the model runs before that command, so a model cannot fix it.
`campaign serve` runs the same server (MLflow's local pyfunc backend: same routes, request and response formats)
with the scripts folder of the interpreter it runs in put first on PATH.
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path
from urllib.parse import urlparse

import click
import mlflow
from mlflow.models.flavor_backend_registry import get_flavor_backend

from pipelines.errors import InputError


def scripts_folder() -> str:
    """The folder where this Python environment installs its commands (`uvicorn` among them)."""
    return sysconfig.get_path("scripts")


def serve(model_uri: str, *, host: str = "127.0.0.1", port: int = 5000, workers: int = 1) -> None:
    """Serve `model_uri` (a model folder or an MLflow model URI) on host:port until the server stops.

    Answers GET /ping and /health, and POST /invocations with a JSON body such as
    {"dataframe_split": {"columns": [...], "data": [[...]]}, "params": {"decision_key": "..."}}."""
    location = urlparse(model_uri)
    if location.scheme in ("", "file") and not (Path(location.path) / "MLmodel").is_file():
        raise InputError(f"model: no MLflow model folder at {model_uri} (it has no MLmodel file)")
    try:
        backend = get_flavor_backend(model_uri, env_manager="local", workers=workers)
    except (OSError, mlflow.exceptions.MlflowException) as error:
        raise InputError(f"model: cannot serve {model_uri}: {str(error).splitlines()[0]}") from None
    os.environ["PATH"] = os.pathsep.join([scripts_folder(), os.environ.get("PATH", "")])
    try:
        backend.serve(model_uri=model_uri, port=port, host=host, timeout=None)
    except KeyboardInterrupt:  # Ctrl-C stops the server (it gets the same signal): a normal way to end
        pass


@click.command("serve")
@click.option("-m", "--model", "model_uri", required=True, metavar="URI",
              help="model folder (e.g. out/policy) or MLflow model URI (runs:/<run>/policy, models:/<name>@champion)")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on (0.0.0.0: every interface)")
@click.option("-p", "--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1), help="server processes")
@click.option("--tracking-uri", default=None, metavar="URI",
              help="MLflow tracking URI for runs:/ and models:/ URIs (default: $MLFLOW_TRACKING_URI, else "
                   "sqlite:///mlflow.db)")
def serve_command(model_uri: str, host: str, port: int, workers: int, tracking_uri: str | None) -> None:
    """Serve a policy model over HTTP (MLflow's scoring server): POST /invocations, GET /ping."""
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    serve(model_uri, host=host, port=port, workers=workers)
