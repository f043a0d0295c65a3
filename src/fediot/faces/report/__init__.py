"""Self-contained HTML run reports with inline SVG charts (no scripts, no external resources).

- :mod:`fediot.faces.report.svg`: the chart primitives (line, grouped bars, ROC, histogram);
- :mod:`fediot.faces.report.html`: :func:`render_report` / :func:`write_report` for a run folder.
"""

from fediot.faces.report.html import render_report, report_summary, write_report

__all__ = ["render_report", "report_summary", "write_report"]
