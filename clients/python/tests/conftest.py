from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cairn_client import Client, ServerError

from .server import Server, backend_kind, cairn_binary, hash_token, new_backend

ADMIN, WRITER, READER, VISION = "admin-secret", "writer-secret", "reader-secret", "vision-secret"

#: The job queue's time-driven work made quick: maintenance (promotion of due jobs, rescue of lapsed leases)
#: every 50 ms, failed jobs retried after a fixed 100 ms.
QUICK_QUEUE = (
    "[queue]\nmaintenance_interval_ms = 50\n"
    "[queue.backoff]\nconstant_ms = 100\nunit_ms = 0\nmax_ms = 100\njitter = 0\n"
)


def pytest_report_header() -> str:
    return f"cairn backend: {backend_kind()} (CAIRN_TEST_BACKEND)"


@pytest.fixture(scope="session")
def binary() -> str:
    return cairn_binary()


@pytest.fixture(scope="session")
def server(binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server without tokens (loopback, everything allowed), default limits."""
    s = Server(binary, tmp_path_factory.mktemp("open") / "data", backend=new_backend()).start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def auth_server(binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with tokens: admin, write, read, and write scoped to project ``vision``."""
    tokens: list[tuple[str, str, str, str | None]] = [
        ("admin", ADMIN, "admin", None),
        ("writer", WRITER, "write", None),
        ("reader", READER, "read", None),
        ("vision", VISION, "write", "vision"),
    ]
    config = ""
    for name, token, role, project in tokens:
        config += f'[[tokens]]\nname = "{name}"\nsha256 = "{hash_token(binary, token)}"\nrole = "{role}"\n'
        if project:
            config += f'project = "{project}"\n'
    s = Server(binary, tmp_path_factory.mktemp("auth") / "data", config, backend=new_backend()).start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def limited_server(binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with tight limits: 2 KiB bodies, one request at a time, changes kept one second."""
    config = (
        "[limits]\nmax_body_bytes = 2048\nmax_concurrency = 1\nmax_wait_ms = 5000\n"
        "[changes]\nretention_secs = 1\ntrim_interval_ms = 100\n"
    )
    s = Server(binary, tmp_path_factory.mktemp("limited") / "data", config, backend=new_backend()).start()
    yield s
    s.stop()


def skip_without_queue(server: Server, token: str | None = None) -> None:
    """Skips the test when the server's backend has no job queue (``/v1/queue`` answers 501
    ``/problems/not-supported``); on a backend that has one, the test runs."""
    with Client(server.url, token=token) as c:
        try:
            c.queues()
        except ServerError as e:
            if e.status == 501 and e.kind == "not-supported":
                pytest.skip(f"{e.detail} (CAIRN_TEST_BACKEND={backend_kind()}: 501 {e.type})")
            raise


@pytest.fixture(scope="session")
def queue_server(binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server without tokens whose job queue runs maintenance every 50 ms and retries failed jobs after
    100 ms; the tests using it are skipped on a backend without a job queue."""
    s = Server(binary, tmp_path_factory.mktemp("queue") / "data", QUICK_QUEUE, backend=new_backend()).start()
    try:
        skip_without_queue(s)
        yield s
    finally:
        s.stop()


def skip_without_metrics(server: Server, token: str | None = None) -> None:
    """Skips the test when the server's backend has no run metrics (``/v1/runs/{run}/metrics`` answers 501
    ``/problems/not-supported``); on a backend that has them, the test runs."""
    with Client(server.url, token=token) as c:
        try:
            c.latest_metrics("probe")
        except ServerError as e:
            if e.status == 501 and e.kind == "not-supported":
                pytest.skip(f"{e.detail} (CAIRN_TEST_BACKEND={backend_kind()}: 501 {e.type})")
            raise


@pytest.fixture(scope="session")
def metrics_server(server: Server) -> Server:
    """The server without tokens, once its backend is known to have run metrics: the tests using it are
    skipped on a backend without them (the check runs once; its skip holds for the session)."""
    skip_without_metrics(server)
    return server


@pytest.fixture
def run_id() -> str:
    """A run no other test uses."""
    return f"run-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def queue(queue_server: Server) -> str:
    """A queue no other test uses."""
    return f"q-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    with Client(server.url) as c:
        yield c


@pytest.fixture
def jobs(client: Client) -> str:
    """A new collection of jobs with a ``(status, priority)`` index and one on ``owner``."""
    name = f"jobs-{uuid.uuid4().hex[:12]}"
    client.declare_collection(name, [("status_priority", ["status", "priority"]), ("owner", ["owner"])])
    return name


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def backend() -> str | None:
    """The backend of a test's own server: ``None`` (embedded, its data directory) or a new database's URL
    (``CAIRN_TEST_BACKEND=postgres``). A restart keeps it."""
    return new_backend()
