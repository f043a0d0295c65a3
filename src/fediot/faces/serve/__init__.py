"""Model serving: an HTTP scoring API over a run's global model, with hot reload and metrics.

``create_app(run)`` builds the FastAPI application (``fediot serve`` runs it with uvicorn);
:mod:`~fediot.faces.serve.bodies` parses request bodies, :mod:`~fediot.faces.serve.models`
loads and reloads the model, :mod:`~fediot.faces.serve.metrics` renders Prometheus text.
"""

from fediot.faces.serve.app import DEFAULT_MAX_BODY_BYTES, create_app
from fediot.faces.serve.bodies import (
    BODY_TYPES,
    DEFAULT_MAX_ROWS,
    RequestError,
    ScoreRequest,
    parse_body,
)
from fediot.faces.serve.models import LoadedModel, ModelSource

__all__ = [
    "BODY_TYPES",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_ROWS",
    "LoadedModel",
    "ModelSource",
    "RequestError",
    "ScoreRequest",
    "create_app",
    "parse_body",
]
