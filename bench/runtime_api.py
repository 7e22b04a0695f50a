#!/usr/bin/env python3
"""A minimal AWS Lambda Runtime API, to run real Lambda runtimes (the Rust `lambda_runtime`
crate, Python's `awslambdaric`) on this machine and time them.

The runtime side of the interface, as Lambda serves it at AWS_LAMBDA_RUNTIME_API:

  GET  /2018-06-01/runtime/invocation/next            long poll; the next event, with headers
       Lambda-Runtime-Aws-Request-Id, Lambda-Runtime-Deadline-Ms (epoch ms, now + 900 s),
       Lambda-Runtime-Invoked-Function-Arn, Lambda-Runtime-Trace-Id
  POST /2018-06-01/runtime/invocation/<id>/response   202
  POST /2018-06-01/runtime/invocation/<id>/error      202 (Lambda-Runtime-Function-Error-Type)
  POST /2018-06-01/runtime/init/error                 202

Library use:

  from runtime_api import RuntimeApi
  with RuntimeApi([event1, event2]) as api:          # serving on 127.0.0.1:<free port>
      env["AWS_LAMBDA_RUNTIME_API"] = api.address
      t0 = time.perf_counter(); proc = subprocess.Popen(cmd, env=env)
      invocations = api.wait_all(timeout=60)         # raises TimeoutError / InitError
      cold_s = invocations[0].done_at - t0
  # (kill the runtime process before or after; `close()` releases its blocked `next`)

Events are handed out in order, one per `next`; `add(event)` appends more later. After the last
one, `next` blocks, as Lambda does while the function is idle, until `close()`, which drops the
waiting connections. Every timestamp is `time.perf_counter()`.

  python bench/runtime_api.py --selftest
"""
import argparse
import dataclasses
import json
import os
import socket
import sys
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = "/2018-06-01/runtime"
DEFAULT_ARN = "arn:aws:lambda:us-east-1:123456789012:function:peer"
TIMEOUT_S = 900


@dataclasses.dataclass
class Invocation:
    request_id: str
    event: bytes  # the JSON body handed out
    trace_id: str
    deadline_ms: int | None = None  # epoch ms sent in Lambda-Runtime-Deadline-Ms
    requested_at: float | None = None  # the runtime's `next` arrived (it was ready)
    sent_at: float | None = None  # the event was handed to it (stamped just before the write)
    done_at: float | None = None  # its response or error arrived, body read in full
    outcome: str | None = None  # "response" | "error"
    body: bytes | None = None
    error_type: str | None = None  # Lambda-Runtime-Function-Error-Type of an error

    @property
    def duration(self):
        """Seconds from handing out the event to its response: the invocation's duration."""
        return self.done_at - self.sent_at

    def json(self):
        return json.loads(self.body)


class InitError(RuntimeError):
    """The runtime posted /runtime/init/error."""


class RuntimeApi:
    def __init__(self, events=(), *, function_arn=DEFAULT_ARN, timeout_s=TIMEOUT_S, host="127.0.0.1", port=0):
        self.function_arn = function_arn
        self.timeout_s = timeout_s
        self.invocations: list[Invocation] = []
        self.polls: list[float] = []  # time of every `next` request, including idle ones
        self.init_errors: list[tuple[float, bytes, str | None]] = []  # (time, body, error type)
        self._by_id: dict[str, Invocation] = {}
        self._handed_out = 0
        self._closed = False
        self._cond = threading.Condition()
        self._connections: set[socket.socket] = set()
        for event in events:
            self.add(event)
        self._server = _Server((host, port), _Handler)
        self._server.api = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="runtime-api", daemon=True)
        self._thread.start()

    @property
    def address(self):
        """host:port, the value of AWS_LAMBDA_RUNTIME_API."""
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def add(self, event):
        """Queue one more event (a dict, or JSON as str/bytes); returns its Invocation record."""
        body = event if isinstance(event, bytes) else event.encode() if isinstance(event, str) else json.dumps(event).encode()
        now = time.time()
        trace = f"Root=1-{int(now):08x}-{uuid.uuid4().hex[:24]};Parent={uuid.uuid4().hex[:16]};Sampled=0"
        inv = Invocation(request_id=str(uuid.uuid4()), event=body, trace_id=trace)
        with self._cond:
            self.invocations.append(inv)
            self._by_id[inv.request_id] = inv
            self._cond.notify_all()
        return inv

    def wait_all(self, timeout=None):
        """Block until every queued event has a response or error; returns the invocations.
        Raises TimeoutError, or InitError if the runtime reported an init error."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self.init_errors:
                    raise InitError(self.init_errors[0][1].decode(errors="replace"))
                if all(inv.outcome for inv in self.invocations):
                    return list(self.invocations)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    done = sum(1 for inv in self.invocations if inv.outcome)
                    raise TimeoutError(f"{done} of {len(self.invocations)} invocations done after {timeout} s")
                self._cond.wait(left)

    def close(self):
        """Stop serving; a runtime blocked in `next` sees its connection dropped."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._server.shutdown()
        with self._cond:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()
        self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # Called by the request handler threads.

    def _next(self, requested_at):
        """The next invocation to hand out, or None once closed."""
        with self._cond:
            self.polls.append(requested_at)
            while self._handed_out >= len(self.invocations) and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            inv = self.invocations[self._handed_out]
            self._handed_out += 1
            inv.requested_at = requested_at
            inv.deadline_ms = int(time.time() * 1000) + self.timeout_s * 1000
            return inv

    def _finish(self, request_id, outcome, body, error_type, at):
        """Record a response/error; returns an HTTP status and an error body if refused."""
        with self._cond:
            inv = self._by_id.get(request_id)
            if inv is None or inv.sent_at is None:
                return 400, {"errorMessage": f"unknown request id {request_id}", "errorType": "InvalidRequestID"}
            if inv.outcome is not None:
                return 400, {"errorMessage": f"{request_id} already has a {inv.outcome}", "errorType": "InvalidStateTransition"}
            inv.done_at, inv.outcome, inv.body, inv.error_type = at, outcome, body, error_type
            self._cond.notify_all()
            return 202, None

    def _init_error(self, body, error_type, at):
        with self._cond:
            self.init_errors.append((at, body, error_type))
            self._cond.notify_all()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # close() shuts the kept-alive connections down itself


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as runtime clients expect; handles Expect: 100-continue
    server_version = "RuntimeApi"

    def setup(self):
        super().setup()
        # No Nagle (Go's net/http, which serves the real API, does the same): a small body
        # written after its headers would otherwise wait for the runtime's delayed ACK (~40 ms).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        api = self.server.api
        with api._cond:
            api._connections.add(self.connection)

    def finish(self):
        api = self.server.api
        with api._cond:
            api._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format, *args):
        pass

    def _reply(self, status, payload=None, headers=()):
        body = b"" if payload is None else payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self._headers_buffer.append(b"\r\n" + body)  # headers and body in one write
        self.flush_headers()

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self):
        at = time.perf_counter()
        if self.path != f"{PREFIX}/invocation/next":
            return self._reply(404, {"errorMessage": f"no route {self.path}", "errorType": "NotFound"})
        api = self.server.api
        inv = api._next(at)
        if inv is None:  # closed while idle: drop the connection, as a frozen sandbox would
            self.close_connection = True
            return
        # Stamped before the write: a fast runtime can post its response before _reply returns,
        # and _finish refuses an invocation that was never sent.
        inv.sent_at = time.perf_counter()
        self._reply(200, inv.event, [
            ("Lambda-Runtime-Aws-Request-Id", inv.request_id),
            ("Lambda-Runtime-Deadline-Ms", str(inv.deadline_ms)),
            ("Lambda-Runtime-Invoked-Function-Arn", api.function_arn),
            ("Lambda-Runtime-Trace-Id", inv.trace_id),
        ])

    def do_POST(self):
        body = self._read_body()
        at = time.perf_counter()
        api = self.server.api
        error_type = self.headers.get("Lambda-Runtime-Function-Error-Type")
        path = self.path
        if path == f"{PREFIX}/init/error":
            api._init_error(body, error_type, at)
            return self._reply(202, {"status": "OK"})
        parts = path[len(PREFIX):].split("/") if path.startswith(PREFIX + "/invocation/") else []
        # ["", "invocation", <id>, "response" | "error"]
        if len(parts) == 4 and parts[3] in ("response", "error"):
            status, err = api._finish(parts[2], parts[3], body, error_type, at)
            return self._reply(status, err or {"status": "OK"})
        return self._reply(404, {"errorMessage": f"no route {path}", "errorType": "NotFound"})


def _client_loop(address, handler, stop_after=None):
    """A tiny runtime (urllib), for the self-test: next -> handler -> response/error."""
    base = f"http://{address}{PREFIX}/invocation"
    n = 0
    while stop_after is None or n < stop_after:
        with urllib.request.urlopen(f"{base}/next") as r:
            request_id = r.headers["Lambda-Runtime-Aws-Request-Id"]
            event = json.loads(r.read())
        try:
            url, body = f"{base}/{request_id}/response", json.dumps(handler(event)).encode()
            headers = {}
        except Exception as e:
            url = f"{base}/{request_id}/error"
            body = json.dumps({"errorMessage": str(e), "errorType": type(e).__name__}).encode()
            headers = {"Lambda-Runtime-Function-Error-Type": "Unhandled"}
        with urllib.request.urlopen(urllib.request.Request(url, body, headers, method="POST")) as r:
            assert r.status == 202, r.status
        n += 1


def selftest():
    def handler(event):
        if event.get("fail"):
            raise ValueError("asked to fail")
        return {"double": event["n"] * 2}

    def post(address, path, body, headers=None, chunked=False):
        import http.client

        conn = http.client.HTTPConnection(address, timeout=5)
        conn.request("POST", PREFIX + path, iter([body]) if chunked else body, headers or {}, encode_chunked=chunked)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r.status, data

    events = [{"n": 1}, {"n": 2, "fail": True}, {"n": 3}]
    with RuntimeApi(events) as api:
        client = threading.Thread(target=_client_loop, args=(api.address, handler, 4), daemon=True)
        client.start()
        invs = api.wait_all(timeout=10)
        assert [i.outcome for i in invs] == ["response", "error", "response"], invs
        assert invs[0].json() == {"double": 2} and invs[2].json() == {"double": 6}
        assert invs[1].error_type == "Unhandled" and invs[1].json()["errorType"] == "ValueError"
        for i in invs:
            assert i.requested_at <= i.sent_at <= i.done_at, i
            assert i.deadline_ms > time.time() * 1000 + (TIMEOUT_S - 10) * 1000
        assert invs[0].done_at <= invs[1].requested_at, "events are handed out one at a time, in order"

        # Idle: the client's 4th `next` blocks ...
        time.sleep(0.3)
        assert client.is_alive() and len(api.polls) == 4, api.polls
        # ... until another event arrives (its 4th and last).
        late = api.add({"n": 21})
        api.wait_all(timeout=5)
        client.join(timeout=5)
        assert late.json() == {"double": 42} and not client.is_alive()

        # Refusals and the other routes.
        assert post(api.address, f"/invocation/{late.request_id}/response", b"{}")[0] == 400
        assert post(api.address, "/invocation/nope/response", b"{}")[0] == 400
        assert post(api.address, "/nope", b"")[0] == 404

        # A chunked response body (some clients stream).
        chunked = api.add({"n": 5})
        with urllib.request.urlopen(f"http://{api.address}{PREFIX}/invocation/next", timeout=5) as r:
            assert r.headers["Lambda-Runtime-Aws-Request-Id"] == chunked.request_id and json.loads(r.read()) == {"n": 5}
        status, _ = post(api.address, f"/invocation/{chunked.request_id}/response", b'{"chunked": true}', chunked=True)
        assert status == 202 and chunked.json() == {"chunked": True}

        # A runtime idle in `next` when the API closes.
        dropped = []

        def idle_runtime():
            try:
                _client_loop(api.address, handler)
            except OSError as e:  # http.client.RemoteDisconnected
                dropped.append(e)

        idle = threading.Thread(target=idle_runtime, daemon=True)
        idle.start()
        time.sleep(0.2)
        assert idle.is_alive()
    # close() dropped its connection: its urlopen failed and the thread ended.
    idle.join(timeout=5)
    assert not idle.is_alive() and dropped, "close() should release a blocked next"

    with RuntimeApi([{"n": 1}]) as api:
        assert post(api.address, "/init/error", b'{"errorMessage": "boom"}', {"Lambda-Runtime-Function-Error-Type": "Runtime.ImportModuleError"})[0] == 202
        try:
            api.wait_all(timeout=5)
            raise AssertionError("wait_all should raise InitError")
        except InitError as e:
            assert "boom" in str(e)
        assert api.init_errors[0][2] == "Runtime.ImportModuleError"

    d = invs[0]
    print(f"selftest ok: {len(invs)} invocations; first took {d.duration * 1e3:.2f} ms from hand-out to response")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--selftest", action="store_true")
    args = ap.parse_args()
    if args.selftest:
        selftest()
    else:
        ap.print_help()
        sys.exit(2)


if __name__ == "__main__":
    main()
