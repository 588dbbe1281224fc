from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cairn_client import Client

from .server import Server, backend_kind, cairn_binary, hash_token, new_backend

ADMIN, WRITER, READER, VISION = "admin-secret", "writer-secret", "reader-secret", "vision-secret"


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
