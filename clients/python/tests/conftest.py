"""A real gateway for the client's tests: the `points-gateway` binary on
an ephemeral port, on a fresh SQLite file or a fresh PostgreSQL database
(on the cluster ``TEST_DATABASE_URL`` names), with a local HTTP server
playing fal's usage API. Nothing here reaches the internet.

``GATEWAY_BIN`` names the binary (default: the workspace's debug build).
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[3]
SECRET = "python-client-tests-secret-0123456789"
FAL_KEY = "fal-test-key:aaaa-bbbb-cccc-9f3e"


def gateway_bin() -> str:
    b = os.environ.get("GATEWAY_BIN", str(REPO / "target" / "debug" / "points-gateway"))
    if not os.access(b, os.X_OK):
        pytest.fail(f"no gateway binary at {b}: build it (cargo build) or set GATEWAY_BIN")
    return b


def run_cli(database_url: str, *args: str, env: Optional[Dict[str, str]] = None) -> str:
    e = dict(os.environ, DATABASE_URL=database_url, GATEWAY_JWT_SECRET=SECRET)
    e.update(env or {})
    p = subprocess.run([gateway_bin(), *args], env=e, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise AssertionError(f"points-gateway {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}")
    return p.stdout


def fresh_postgres() -> str:
    """A new database on the test cluster (never skipped: PostgreSQL is
    the production engine)."""
    base = os.environ.get("TEST_DATABASE_URL")
    if not base:
        pytest.fail("TEST_DATABASE_URL must name a PostgreSQL cluster (scripts/test.sh starts one)")
    import psycopg2

    name = "pyclient_" + uuid.uuid4().hex[:12]
    conn = psycopg2.connect(base.replace("postgres://", "postgresql://", 1))
    conn.autocommit = True
    with conn.cursor() as c:
        c.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return re.sub(r"/[^/?]*(\?|$)", f"/{name}\\1", base, count=1)


class FalStandIn:
    """fal's ``GET /v1/models/usage`` for any admin key, with the documented
    shape (summary lines of endpoint, unit, quantity, unit price, cost)."""

    def __init__(self) -> None:
        self.keys_seen: List[str] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                auth = self.headers.get("Authorization", "")
                stand_in.keys_seen.append(auth)
                if not self.path.startswith("/v1/models/usage") or not auth.startswith("Key "):
                    self.send_response(403)
                    self.end_headers()
                    self.wfile.write(b'{"error":{"type":"authorization_error","message":"Access denied"}}')
                    return
                body = {
                    "summary": [
                        {"endpoint_id": "fal-ai/flux/dev", "unit": "images", "quantity": 4,
                         "unit_price": 0.025, "cost": 0.1, "currency": "USD"},
                    ],
                    "time_series": [],
                    "next_cursor": None,
                    "has_more": False,
                }
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


class Gateway:
    """A running gateway process and the tokens of its callers."""

    def __init__(self, database_url: str, workdir: Path, fal_url: str, env: Optional[Dict[str, str]] = None):
        self.database_url = database_url
        self.log = workdir / f"gateway-{uuid.uuid4().hex[:6]}.log"
        e = dict(
            os.environ,
            DATABASE_URL=database_url,
            GATEWAY_BIND="127.0.0.1:0",
            GATEWAY_JWT_SECRET=SECRET,
            FAL_API_BASE_URL=fal_url,
            EXPIRY_SWEEP_SECS="0",
            RUST_LOG="info",
        )
        e.update(env or {})
        out = open(self.log, "w")
        self.proc = subprocess.Popen([gateway_bin(), "serve"], env=e, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        self.url = ""
        while time.time() < deadline:
            m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", self.log.read_text())
            if m:
                self.url = m.group(1)
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        if not self.url:
            raise AssertionError(f"the gateway did not start:\n{self.log.read_text()}")
        self.admin = self.token("admin")
        self.service = self.token("service", name="py-tests")

    def token(self, role: str, *, user: Optional[int] = None, name: Optional[str] = None) -> str:
        args = ["token", "--role", role]
        if user is not None:
            args += ["--user", str(user)]
        if name is not None:
            args += ["--name", name]
        return run_cli(self.database_url, *args).strip()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="session")
def fal() -> Iterator[FalStandIn]:
    f = FalStandIn()
    yield f
    f.close()


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pyclient-") as d:
        yield Path(d)


def database_for(engine: str, workdir: Path) -> str:
    if engine == "sqlite":
        return f"sqlite://{workdir}/gw-{uuid.uuid4().hex[:8]}.sqlite?mode=rwc"
    return fresh_postgres()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gateway(request: pytest.FixtureRequest, workdir: Path, fal: FalStandIn) -> Iterator[Gateway]:
    url = database_for(request.param, workdir)
    # Demo data through the real ledger code: fal accounts and tasks for the cost report.
    run_cli(url, "seed-demo", "--users", "3")
    g = Gateway(url, workdir, fal.url)
    g.engine = request.param  # type: ignore[attr-defined]
    yield g
    g.stop()


class CuttingProxy:
    """A TCP proxy in front of the gateway that, while ``cuts`` is positive,
    lets a request through but drops the connection instead of passing the
    reply back: the gateway commits, the client sees no answer."""

    def __init__(self, upstream: str) -> None:
        m = re.match(r"http://([^:/]+):(\d+)", upstream)
        assert m
        self.upstream = (m.group(1), int(m.group(2)))
        self.cuts = 0
        self.cut_count = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            up = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(client, up, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, reply: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if reply:
                    with self.lock:
                        cut = self.cuts > 0
                        if cut:
                            self.cuts -= 1
                            self.cut_count += 1
                    if cut:
                        break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.closed = True
        self.sock.close()
