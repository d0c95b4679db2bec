"""A minimal OTLP/HTTP receiver for CI: records every POST to /v1/<signal> and serves the records.

4318   POST /v1/traces (and /v1/metrics, /v1/logs): 200 with an empty protobuf response, body kept.
14269  GET / : 200 (where Jaeger all-in-one answers its health check).
16686  GET /received : JSON list of {"path", "content_type", "body" (base64)}, oldest first.
"""

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RECEIVED: list[dict[str, str]] = []
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.server.server_port != 4318 or not self.path.startswith("/v1/"):
            self._send(404, b"", "text/plain")
            return
        with LOCK:
            RECEIVED.append(
                {
                    "path": self.path,
                    "content_type": self.headers.get("Content-Type", ""),
                    "body": base64.b64encode(body).decode(),
                }
            )
        self._send(200, b"", "application/x-protobuf")

    def do_GET(self) -> None:
        if self.server.server_port == 16686 and self.path == "/received":
            with LOCK:
                data = json.dumps(RECEIVED).encode()
            self._send(200, data, "application/json")
        elif self.server.server_port == 14269 and self.path == "/":
            self._send(200, b"ok", "text/plain")
        else:
            self._send(404, b"", "text/plain")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        print(self.address_string(), format % args, flush=True)


servers = [ThreadingHTTPServer(("0.0.0.0", port), Handler) for port in (4318, 14269, 16686)]
for server in servers[1:]:
    threading.Thread(target=server.serve_forever, daemon=True).start()
servers[0].serve_forever()
