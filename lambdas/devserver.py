"""Serve the story API locally, with no AWS account: `python -m lambdas.devserver`.

Listens on http://127.0.0.1:8787 (PORT to change it) and runs the same story
generator the Lambda runs, built from the environment with the sessions and the
circuit breakers in memory and events off. Without AI_PROVIDER_CONFIG the offline
mock provider writes the beats; with it, the configured providers are called, with
keys from OPENAI_API_KEY / ANTHROPIC_API_KEY (Bedrock uses the usual AWS credentials).

Each HTTP request becomes an API Gateway REST proxy event and the handler's result
becomes the HTTP response. Requests are handled one at a time, like one Lambda
container, because Powertools' resolver keeps the current event in class state.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .story_generator.handler import build_handler
from .story_generator.settings import ConfigurationError, Settings, load_settings

DEFAULT_PORT = 8787
# API Gateway refuses larger payloads itself, before the Lambda sees them.
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024

LambdaHandler = Callable[[Mapping[str, Any], Any], Mapping[str, Any]]


def local_settings(environ: Mapping[str, str]) -> Settings:
    """The settings of `environ` with embedded storage and without events."""
    local = {name: value for name, value in environ.items() if name != "SESSION_TABLE_NAME"}
    local["EVENTS_ENABLED"] = "false"
    local.setdefault("ENVIRONMENT", "local")
    return load_settings(local)


@dataclass
class LocalContext:
    """The parts of the Lambda context object the handler and Powertools read."""

    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_name: str = "story-generator-local"
    function_version: str = "$LATEST"
    invoked_function_arn: str = "arn:aws:lambda:local:000000000000:function:story-generator-local"
    memory_limit_in_mb: int = 1024
    log_group_name: str = "/aws/lambda/story-generator-local"
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        """API Gateway's integration timeout, as the Lambda would see it."""
        return 29_000


def proxy_event(
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    source_ip: str = "127.0.0.1",
) -> dict[str, Any]:
    """The API Gateway REST proxy event of an HTTP request (`target`: path and query)."""
    url = urlsplit(target)
    path = url.path or "/"  # REST APIs pass the path still percent-encoded
    query = parse_qs(url.query, keep_blank_values=True)
    multi_headers: dict[str, list[str]] = {}
    for name, value in headers:
        multi_headers.setdefault(name, []).append(value)
    try:
        text, encoded = body.decode(), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode(), True
    request_id = str(uuid.uuid4())
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": {name: values[-1] for name, values in multi_headers.items()},
        "multiValueHeaders": multi_headers,
        "queryStringParameters": {name: values[-1] for name, values in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": None,
        "stageVariables": None,
        "body": text if body else None,
        "isBase64Encoded": encoded,
        "requestContext": {
            "requestId": request_id,
            "stage": "local",
            "httpMethod": method,
            "path": path,
            "resourcePath": path,
            "requestTimeEpoch": int(time.time() * 1000),
            "identity": {"sourceIp": source_ip},
        },
    }


class DevServer(ThreadingHTTPServer):
    """An HTTP server in front of a Lambda handler of API Gateway proxy events."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: LambdaHandler) -> None:
        super().__init__(address, _ProxyRequestHandler)
        self.handler = handler
        self.lock = threading.Lock()

    def invoke(self, event: Mapping[str, Any]) -> Mapping[str, Any]:
        """Run the handler on `event`, one event at a time."""
        with self.lock:
            return self.handler(event, LocalContext())


class _ProxyRequestHandler(BaseHTTPRequestHandler):
    server: DevServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._proxy()

    # http.server dispatches on these names; every method goes to the handler.
    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET  # noqa: N815

    def _proxy(self) -> None:
        length = self.headers.get("Content-Length", "0")
        if not length.isdigit():
            self._reply_error(411, "length_required", "Send a Content-Length header.")
            return
        if int(length) > MAX_PAYLOAD_BYTES:
            self._reply_error(413, "payload_too_large", "The request body is over 10 MB.")
            return
        body = self.rfile.read(int(length))
        event = proxy_event(
            self.command, self.path, self.headers.items(), body, self.client_address[0]
        )
        result = self.server.invoke(event)
        headers: dict[str, list[str]] = {
            name: [str(value)] for name, value in (result.get("headers") or {}).items()
        }
        for name, values in (result.get("multiValueHeaders") or {}).items():
            headers[name] = [str(value) for value in values]
        payload = result.get("body") or ""
        data = base64.b64decode(payload) if result.get("isBase64Encoded") else payload.encode()
        self._reply(int(result["statusCode"]), headers, data)

    def _reply_error(self, status: int, code: str, message: str) -> None:
        data = json.dumps({"error": {"code": code, "message": message}}).encode()
        self._reply(status, {"Content-Type": ["application/json"]}, data)
        self.close_connection = True

    def _reply(self, status: int, headers: Mapping[str, list[str]], data: bytes) -> None:
        self.send_response(status)
        for name, values in headers.items():
            if name.lower() not in {"content-length", "connection", "transfer-encoding"}:
                for value in values:
                    self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


def main() -> None:
    """Serve until interrupted."""
    port_text = os.environ.get("PORT", str(DEFAULT_PORT))
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        sys.exit(f"PORT = {port_text!r} is not allowed: use a port number from 0 to 65535")
    try:
        handler = build_handler(local_settings(os.environ))
    except ConfigurationError as error:
        sys.exit(f"Configuration error: {error}")
    server = DevServer(("127.0.0.1", int(port_text)), handler)
    print(f"Story API on http://127.0.0.1:{server.server_port} (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
