"""The live dashboard: a read-only web page over a runs folder (devices, round progress, live
metric charts, per-device system figures, recent logs), served on loopback by default.

``fediot dashboard`` serves it in the foreground; ``--dashboard PORT`` on ``fediot simulate``
and ``fediot server`` serves it beside the run (:func:`start_dashboard`).
"""

from fediot.faces.access import new_token
from fediot.faces.dashboard.app import create_app, run_state
from fediot.faces.dashboard.server import (
    DashboardError,
    DashboardHandle,
    check_binding,
    dashboard_url,
    serve_dashboard,
    start_dashboard,
)

__all__ = [
    "DashboardError",
    "DashboardHandle",
    "check_binding",
    "create_app",
    "dashboard_url",
    "new_token",
    "run_state",
    "serve_dashboard",
    "start_dashboard",
]
