#!/usr/bin/python3
"""otlp_receiver.py - a small OTLP/HTTP receiver for the tests (JSON encoding).

    otlp_receiver.py --port N --out FILE [--delay-ms MS] [--status CODE] [--discard]

Accepts POST /v1/traces with Content-Type application/json (OTLP's protobuf-JSON
mapping), appends each request's body, as one line, to FILE (flushed, so a test
reads what arrived so far) and answers 200 with {} (or --status). With --delay-ms
it holds every request that long before reading and answering: a collector
slower than the exporter's timeout. "Dead" is the process stopped (SIGTERM):
connections are then refused. A body that is not JSON is answered 400 and not
stored. --discard answers every POST 200 unread (the benchmark's collector, as
cheap as it gets: scripts/bench.sh BENCH_TRACING=1). GET /health answers 200, for the test to wait until the receiver
listens. Debian's python3 alone, no package.

tests/faults/test_tracing.c starts it on a free port and points the services'
OTEL_EXPORTER_OTLP_ENDPOINT at it; `make up OTLP_RECEIVER=1` may use it to keep
a local stack's traces in a file a person can read (docs/observability.md).
"""
import argparse
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--delay-ms", type=int, default=0)
    ap.add_argument("--status", type=int, default=200)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--discard", action="store_true",
                    help="answer 200 without parsing or storing (the benchmark's)")
    args = ap.parse_args()
    # SIGTERM stops it whatever its parent left ignored or blocked.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    out = open(args.out, "a", encoding="utf-8")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):  # quiet: the test prints what matters
            pass

        def answer(self, code, body=b"{}"):
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/health":
                self.answer(200)
            else:
                self.answer(404)

        def do_POST(self):
            if args.delay_ms:
                time.sleep(args.delay_ms / 1000.0)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.path != "/v1/traces":
                self.answer(404)
                return
            if args.discard:
                self.answer(args.status)
                return
            try:
                doc = json.loads(body)
                assert isinstance(doc.get("resourceSpans"), list)
            except Exception:
                self.answer(400, b'{"error":"not an ExportTraceServiceRequest in JSON"}')
                return
            with LOCK:
                out.write(json.dumps(doc, separators=(",", ":")) + "\n")
                out.flush()
            self.answer(args.status)

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
