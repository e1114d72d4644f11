"""The job's data source: a small HTTP server on loopback that the example starts.

``GET /items/<n>?latency=<seconds>`` waits ``latency`` seconds, like a slow
remote API, then answers JSON. One daemon thread per request
(``ThreadingHTTPServer``), so parallel clients really wait in parallel.
"""

from __future__ import annotations

import json
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from django.conf import settings

_lock = threading.Lock()  # guards _url
_url: str | None = None


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        head, _, number = parts.path.rpartition("/")
        if head != "/items" or not number.isdigit():
            self.send_error(404, "try /items/<number>")
            return
        latency = float(parse_qs(parts.query).get("latency", ["0"])[0])
        threading.Event().wait(min(latency, 10.0))  # the remote API thinking
        n = int(number)
        body = json.dumps(
            {"number": n, "title": f"Item {n}", "price": str(Decimal(n % 997) / 4)}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: one line per request would drown the demo's table


def serve(port: int = 0) -> ThreadingHTTPServer:
    """Start the source on 127.0.0.1 (port 0: any free one) in a daemon thread."""
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="harvest-source", daemon=True).start()
    return server


def source_url() -> str:
    """``HARVEST_SOURCE_URL``, or the URL of a source started on first use."""
    global _url
    configured: str | None = getattr(settings, "HARVEST_SOURCE_URL", None)
    if configured:
        return configured.rstrip("/")
    with _lock:
        if _url is None:
            host, port = serve().server_address[:2]
            _url = f"http://{host!s}:{port}"
        return _url
