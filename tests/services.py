"""Throwaway Redis and PostgreSQL servers for integration tests, started on free ports.

Without the server binaries these tests skip with the reason; with
CDP_REQUIRE_SERVICES=1 (CI) a missing server is a failure instead.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass

import psycopg
import pytest
import redis

REQUIRED = os.environ.get("CDP_REQUIRE_SERVICES") == "1"


def unavailable(what: str, why: str):
    if REQUIRED:
        pytest.fail(f"{what} is required here (CDP_REQUIRE_SERVICES=1) but {why}")
    pytest.skip(
        f"{what} not available ({why}); .ci/run installs it and sets CDP_REQUIRE_SERVICES=1"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


@dataclass
class RedisServer:
    url: str
    process: subprocess.Popen
    port: int
    directory: str

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def restart(self) -> None:
        """Kill the server (losing everything in memory) and start it again on the same port."""
        self.process.kill()
        self.process.wait()
        self.process = _start_redis(self.port, self.directory)


def _start_redis(port: int, directory: str) -> subprocess.Popen:
    binary = find_binary("redis-server")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        + ["--dir", directory],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return process
        except redis.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("redis-server did not start")


@pytest.fixture(scope="session")
def redis_server():
    if find_binary("redis-server") is None:
        unavailable("redis-server", "the binary is not installed")
    directory = tempfile.mkdtemp(prefix="cdp-redis-")
    port = free_port()
    server = RedisServer(
        f"redis://127.0.0.1:{port}/0", _start_redis(port, directory), port, directory
    )
    yield server
    server.process.kill()
    server.process.wait()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server):
    """A Redis URL on an empty database."""
    redis_server.client().flushall()
    return redis_server.url


def _as_postgres_user(argv: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; CI runs as root, so drop to the postgres user.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--"] + argv
    return argv


@dataclass
class PostgresServer:
    host: str
    port: int

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://cdp@{self.host}:{self.port}/{database}"

    def admin_connection(self) -> psycopg.Connection:
        return psycopg.connect(
            host=self.host, port=self.port, user="cdp", dbname="postgres", autocommit=True
        )


@pytest.fixture(scope="session")
def postgres_server():
    initdb, pg_ctl = find_binary("initdb"), find_binary("pg_ctl")
    if not initdb or not pg_ctl:
        unavailable("PostgreSQL", "initdb/pg_ctl are not installed")
    if os.geteuid() == 0 and subprocess.run(["id", "postgres"], capture_output=True).returncode:
        unavailable("PostgreSQL", "running as root and there is no 'postgres' user to drop to")
    directory = tempfile.mkdtemp(prefix="cdp-pg-")
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    data = os.path.join(directory, "data")
    subprocess.run(
        _as_postgres_user([initdb, "-D", data, "-U", "cdp", "--auth=trust", "-E", "UTF8"])
        + ["--no-locale"],
        check=True,
        capture_output=True,
    )
    port = free_port()
    options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        _as_postgres_user([pg_ctl, "-D", data, "-o", options, "-l", f"{directory}/log", "-w"])
        + ["start"],
        check=True,
        capture_output=True,
    )
    yield PostgresServer("127.0.0.1", port)
    subprocess.run(
        _as_postgres_user([pg_ctl, "-D", data, "-m", "immediate", "stop"]), capture_output=True
    )
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """A URL of a new, empty PostgreSQL database, dropped after the test."""
    name = "cdp_test_" + uuid.uuid4().hex[:10]
    with postgres_server.admin_connection() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield postgres_server.url(name)
    with postgres_server.admin_connection() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
