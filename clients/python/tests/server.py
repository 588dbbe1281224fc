"""Starts the real ``cairn serve`` for the tests: on a free loopback port, over a temporary data directory
or, when ``CAIRN_TEST_BACKEND=postgres``, a fresh database of the PostgreSQL cluster ``CAIRN_TEST_POSTGRES``
names, with an optional configuration file (tokens, limits)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import uuid
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[3]


def cairn_binary() -> str:
    """``CAIRN_BIN`` if set; otherwise the binary cargo builds (``cargo build -p cairn-server --bin cairn``)
    into ``CARGO_TARGET_DIR`` (default ``target/``)."""
    given = os.environ.get("CAIRN_BIN")
    if given:
        if not os.access(given, os.X_OK):
            raise RuntimeError(f"CAIRN_BIN={given} is not an executable")
        return given
    jobs = os.environ.get("CAIRN_JOBS", "2")
    subprocess.run(
        ["cargo", "build", "-j", jobs, "-p", "cairn-server", "--bin", "cairn"], cwd=REPO, check=True
    )
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    if not target.is_absolute():
        target = REPO / target
    return str(target / "debug" / "cairn")


def backend_kind() -> str:
    """``CAIRN_TEST_BACKEND``: ``embedded`` (the default) or ``postgres``."""
    kind = os.environ.get("CAIRN_TEST_BACKEND", "") or "embedded"
    if kind not in ("embedded", "postgres"):
        raise RuntimeError(f"CAIRN_TEST_BACKEND={kind!r}: expected embedded or postgres")
    return kind


def on_postgres() -> bool:
    """Whether the servers of this run keep their records in PostgreSQL, which has no backup route of its own
    (``POST /v1/admin/backup`` answers 501 ``/problems/not-supported``: back the database up with pg_dump)."""
    return backend_kind() == "postgres"


def new_database() -> str:
    """A new, empty database (C collation) in the cluster of ``CAIRN_TEST_POSTGRES``
    (``postgres://postgres@127.0.0.1:PORT/postgres``, which ``scripts/test.sh`` starts); its URL."""
    admin = os.environ.get("CAIRN_TEST_POSTGRES")
    if not admin:
        raise RuntimeError(
            "CAIRN_TEST_BACKEND=postgres needs CAIRN_TEST_POSTGRES"
            " (scripts/postgres-for-tests.sh starts a cluster)"
        )
    name = f"py_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    psql = Path(os.environ.get("CAIRN_PG_BIN", "/usr/lib/postgresql/15/bin")) / "psql"
    sql = f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
    subprocess.run(
        [str(psql), "-d", admin, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    return admin.rsplit("/", 1)[0] + "/" + name


def new_backend() -> str | None:
    """Where a new test server keeps its records: ``None`` for the embedded store of its data directory, or
    the URL of a new database for ``CAIRN_TEST_BACKEND=postgres``."""
    return new_database() if backend_kind() == "postgres" else None


def hash_token(binary: str, token: str) -> str:
    """The token's SHA-256 as the configuration wants it, from ``cairn hash-token``."""
    out = subprocess.run([binary, "hash-token"], input=token, capture_output=True, text=True, check=True)
    return out.stdout.strip()


class Server:
    """One ``cairn serve`` process over the data directory ``data``, or with ``backend`` (a PostgreSQL URL)
    over that database; logs and configuration go beside ``data`` either way. ``restart()`` brings it back
    on the same port and data directory or database."""

    def __init__(
        self, binary: str, data: Path, config: str | None = None, backend: str | None = None
    ) -> None:
        self.binary = binary
        self.data = data
        self.backend = backend
        self.config_path: Path | None = None
        if config is not None:
            self.config_path = data.parent / f"{data.name}.toml"
            self.config_path.write_text(config)
        self.port = 0
        self.s3_port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.log_path = data.parent / f"{data.name}.log"
        self._log: IO[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def s3_url(self) -> str:
        """The S3 API's endpoint."""
        return f"http://127.0.0.1:{self.s3_port}"

    def start(self) -> Server:
        args = [self.binary, "serve", "--listen", f"127.0.0.1:{self.port}"]
        if self.backend is not None:
            # The artifacts' metadata in the database, their bytes in a directory beside the logs.
            objects = (self.data.parent / f"{self.data.name}-objects").resolve()
            args += ["--backend", self.backend, "--artifact-objects", objects.as_uri()]
        else:
            args += ["--data", str(self.data)]
        # The S3 API on a free port too: servers run side by side.
        args += ["--s3-listen", f"127.0.0.1:{self.s3_port}"]
        if self.config_path is not None:
            args += ["--config", str(self.config_path)]
        self._log = open(self.log_path, "a")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._log, text=True, env=env)
        assert self.proc.stdout is not None
        line = ""
        timer = threading.Timer(30, self.proc.kill)
        timer.start()
        try:
            line = self.proc.stdout.readline()
        finally:
            timer.cancel()
        prefix = "listening on http://"
        if not line.startswith(prefix):
            self.proc.kill()
            raise RuntimeError(
                f"cairn serve did not start: {line!r}; log: {self.log_path.read_text()[-2000:]}"
            )
        self.port = int(line.strip()[len(prefix) :].rsplit(":", 1)[1])
        s3_line = self.proc.stdout.readline()
        s3_prefix = "s3 listening on http://"
        if not s3_line.startswith(s3_prefix):
            self.proc.kill()
            raise RuntimeError(f"cairn serve did not start its S3 listener: {s3_line!r}")
        self.s3_port = int(s3_line.strip()[len(s3_prefix) :].rsplit(":", 1)[1])
        return self

    def stop(self) -> None:
        """SIGTERM, and wait for the graceful shutdown."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: no shutdown of any kind. ``start()`` brings the server
        back on the same port and data directory or database."""
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
