"""Requests per second of `make dev` on one kept-alive connection, next to plain http.server.

Each run sends `--requests` sequential requests (default 500) over ONE HTTP/1.1
connection (http.client) to 127.0.0.1 and divides by the wall time; `--repeats`
runs (default 5) per server and scenario, the servers taking turns, give the
min / median / max. Scenarios: `GET /health`, and `POST /stories` with the
offline mock provider (a new story per request, in memory).

The reference is a plain stdlib server (ThreadingHTTPServer, an HTTP/1.1 handler
answering a small JSON body) with TCP_NODELAY, i.e. what http.server does at
best; without TCP_NODELAY it would also wait for delayed ACKs, as `make dev` did.
The ratio is the dev server's median over the plain server's. The last row, the
handler called directly on the same events, is the most the dev server could do.

Run from the repository root: `.venv/bin/python bench/devserver.py`.
`--devserver FILE` measures another version of lambdas/devserver.py, e.g. the
last commit's: `git show HEAD:lambdas/devserver.py > /tmp/devserver_head.py`.
Numbers are for reading, not asserting (but it exits 1 if a connection was not
kept alive, since the numbers would then measure something else).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lambdas import devserver  # noqa: E402
from lambdas.story_generator.handler import build_handler  # noqa: E402

HOST = "127.0.0.1"
WARMUP = 20
HANDLER_ALONE = "handler, no HTTP"
STORY = json.dumps({"genre": "liminal", "max_beats": 4}).encode()
# make dev's stand-in for a Cognito ID token.
READER_TOKEN = "Bearer dev:bench"
SCENARIOS = {"GET /health": ("GET", "/health", None), "POST /stories": ("POST", "/stories", STORY)}


class _PlainHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    _BODY = json.dumps({"status": "ok", "environment": "plain"}).encode()

    def do_GET(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        self.send_response(201 if self.command == "POST" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self._BODY)))
        self.end_headers()
        self.wfile.write(self._BODY)

    do_POST = do_GET  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:
        pass


def dev_server_class(path: Path | None) -> type[HTTPServer]:
    """`DevServer` of lambdas/devserver.py, or of another version of that file."""
    if path is None:
        return devserver.DevServer
    # Loaded as a module of the `lambdas` package so that its relative imports resolve.
    spec = importlib.util.spec_from_file_location("lambdas._bench_devserver", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    server: type[HTTPServer] = module.DevServer
    return server


@contextlib.contextmanager
def running(server: HTTPServer) -> Iterator[int]:
    """Serve `server` on a thread; yields its port."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def rate(port: int, method: str, path: str, body: bytes | None, requests: int) -> float:
    """Requests per second of `requests` sequential requests on one connection."""
    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    headers = {"Authorization": READER_TOKEN}
    if body:
        headers["Content-Type"] = "application/json"

    def one() -> None:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status >= 300:
            raise SystemExit(f"{method} {path} answered {response.status}")

    try:
        for _ in range(WARMUP):
            one()
        sock = connection.sock
        started = time.perf_counter()
        for _ in range(requests):
            one()
        elapsed = time.perf_counter() - started
        # http.client silently reconnects when the server closes: that would be
        # a different benchmark.
        if connection.sock is not sock:
            raise SystemExit(f"{method} {path}: the server did not keep the connection alive")
        return requests / elapsed
    finally:
        connection.close()


def handler_rate(
    handler: devserver.LambdaHandler, method: str, path: str, body: bytes | None, requests: int
) -> float:
    """Calls per second of the handler alone on the same events: the dev server's ceiling."""
    headers = [("Host", HOST), ("Content-Type", "application/json")]
    claims = {"sub": "bench"}

    def event() -> dict[str, object]:
        return devserver.proxy_event(method, path, headers, body or b"", claims=claims)

    for _ in range(WARMUP):
        handler(event(), devserver.LocalContext())
    started = time.perf_counter()
    for _ in range(requests):
        handler(event(), devserver.LocalContext())
    return requests / (time.perf_counter() - started)


def summary(rates: list[float]) -> str:
    """min / median / max requests per second."""
    return f"{min(rates):9.0f} {statistics.median(rates):9.0f} {max(rates):9.0f}" if rates else "-"


def main() -> None:
    """Measure, then print one table per scenario."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--devserver", type=Path, help="another lambdas/devserver.py to measure")
    args = parser.parse_args()
    dev_class = dev_server_class(args.devserver)
    handler = build_handler(devserver.local_settings({}))
    factories: dict[str, Callable[[], HTTPServer]] = {
        "plain http.server": lambda: ThreadingHTTPServer((HOST, 0), _PlainHandler),
        "make dev": lambda: dev_class((HOST, 0), handler),  # type: ignore[call-arg]
    }
    rates: dict[tuple[str, str], list[float]] = {}
    # The Lambda's EMF documents and the servers' consoles: written, not shown.
    with (
        Path(os.devnull).open("w") as null,
        contextlib.redirect_stdout(null),
        contextlib.redirect_stderr(null),
    ):
        for _ in range(args.repeats):
            for scenario, (method, path, body) in SCENARIOS.items():
                for name, factory in factories.items():
                    with running(factory()) as port:
                        measured = rate(port, method, path, body, args.requests)
                    rates.setdefault((scenario, name), []).append(measured)
                measured = handler_rate(handler, method, path, body, args.requests)
                rates.setdefault((scenario, HANDLER_ALONE), []).append(measured)
    source = args.devserver or "lambdas/devserver.py"
    print(f"{args.requests} requests on one connection x {args.repeats} runs; make dev: {source}")
    for scenario in SCENARIOS:
        print(f"\n{scenario:<18} {'min':>9} {'median':>9} {'max':>9}  requests/s")
        for name in [*factories, HANDLER_ALONE]:
            print(f"{name:<18} {summary(rates[scenario, name])}")
        ratio = statistics.median(rates[scenario, "make dev"]) / statistics.median(
            rates[scenario, "plain http.server"]
        )
        print(f"{'ratio (medians)':<18} {ratio:9.2f}")


if __name__ == "__main__":
    main()
