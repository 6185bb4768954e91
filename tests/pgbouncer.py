"""A throwaway PgBouncer in transaction pooling mode in front of the tests' PostgreSQL.

Debian's ``pgbouncer`` package (``.ci/run`` installs it). Any database name is forwarded to
the server (``* =`` in [databases]), so each test's fresh database is reachable through it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

START_TIMEOUT_S = 30.0


class NoPgBouncer(RuntimeError):
    """pgbouncer is not installed or would not start; the message says why."""


@dataclass
class PgBouncer:
    port: int
    process: subprocess.Popen[bytes]
    log_file: Path

    def url_for(self, server_url: str) -> str:
        """``server_url`` (a database of the server behind) as reached through the pooler."""
        parts = urlsplit(server_url)
        user = parts.username or "postgres"
        return urlunsplit(parts._replace(netloc=f"{user}@127.0.0.1:{self.port}"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _ini(server_url: str, port: int, folder: Path) -> str:
    server = urlsplit(server_url)
    return f"""[databases]
* = host={server.hostname} port={server.port or 5432}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder / "users.txt"}
pool_mode = transaction
max_client_conn = 500
default_pool_size = 20
logfile = {folder / "pgbouncer.log"}
"""


@contextlib.contextmanager
def running_pgbouncer(server_url: str) -> Iterator[PgBouncer]:
    """A pgbouncer on a free loopback port, stopped and its files removed on exit."""
    binary = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if binary is None:
        raise NoPgBouncer("pgbouncer is not installed (apt-get install pgbouncer)")
    folder = Path(tempfile.mkdtemp(prefix="jobq-pgbouncer-", dir="/tmp"))
    # pgbouncer refuses to run as root: as root, run it as the postgres account if there is one.
    user = None
    if os.geteuid() == 0:
        with contextlib.suppress(KeyError):
            account = pwd.getpwnam("postgres")
            user = account.pw_name
            os.chown(folder, account.pw_uid, account.pw_gid)
        if user is None:
            shutil.rmtree(folder, ignore_errors=True)
            raise NoPgBouncer("running as root and no 'postgres' account to run pgbouncer as")
    (folder / "users.txt").write_text(f'"{urlsplit(server_url).username or "postgres"}" ""\n')
    port = _free_port()
    ini = folder / "pgbouncer.ini"
    ini.write_text(_ini(server_url, port, folder))
    command = [binary, str(ini)]
    if user is not None:
        command = ["runuser", "-u", user, "--", *command]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bouncer = PgBouncer(port, process, folder / "pgbouncer.log")
    try:
        _wait_until_it_answers(bouncer, server_url)
        yield bouncer
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def _wait_until_it_answers(bouncer: PgBouncer, server_url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    url = bouncer.url_for(server_url)
    while True:
        if bouncer.process.poll() is not None:
            log = bouncer.log_file.read_text() if bouncer.log_file.exists() else ""
            raise NoPgBouncer(f"pgbouncer exited ({bouncer.process.returncode}): {log[-800:]}")
        try:
            with psycopg.connect(url, connect_timeout=2, prepare_threshold=None) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise NoPgBouncer(
                    f"pgbouncer did not answer within {START_TIMEOUT_S}s: {exc}"
                ) from exc
        # A start takes milliseconds; the pause keeps the loop from spinning meanwhile.
        time.sleep(0.05)
