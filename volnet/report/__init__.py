"""The training report page (``volnet report RUN_DIR`` -> ``report.html``) and the live view
(``volnet train --live``): one page, built with :class:`string.Template`, self-contained (images inlined as
``data:`` PNGs, a few lines of inline JavaScript drawing the curves as SVG; no network, no CDN)."""

from volnet.report.live import LiveServer, LiveView, open_server
from volnet.report.page import build_report, live_page, run_data, write_report

__all__ = ["LiveServer", "LiveView", "build_report", "live_page", "open_server", "run_data", "write_report"]
