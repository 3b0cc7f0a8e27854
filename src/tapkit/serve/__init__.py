"""The web app and HTTP API (`tapkit serve`): needs the [serve] extra (FastAPI, uvicorn)."""

from tapkit.serve.app import create_app
from tapkit.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
