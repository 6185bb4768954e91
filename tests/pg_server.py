"""Finding a PostgreSQL server for the tests, or starting a throwaway one.

Order: ``JOBQ_TEST_DATABASE_URL``; the local server on 127.0.0.1:5432; a throwaway cluster
made with the installed server binaries (``initdb``/``pg_ctl``). ``JOBQ_TEST_FORCE_THROWAWAY_PG=1``
skips the first two, so the fallback itself can be tested.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
URL_ENV = "JOBQ_TEST_DATABASE_URL"
FORCE_THROWAWAY_ENV = "JOBQ_TEST_FORCE_THROWAWAY_PG"
# initdb and a cold start take about a second here; the limit is for a wedged command.
COMMAND_TIMEOUT_S = 120
# A port found free can be taken before the server binds it; a few tries make that harmless.
START_ATTEMPTS = 3


class NoPostgres(RuntimeError):
    """No PostgreSQL server could be found or started; the message says what was tried."""


def _run(command: list[str], what: str) -> None:
    """Run a server command; on failure, raise with its output (CalledProcessError's own
    message leaves that out, and it is the only clue to why a cluster would not start)."""
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
    )
    if completed.returncode != 0:
        output = (completed.stdout + completed.stderr).strip()
        raise NoPostgres(f"{what} failed (exit {completed.returncode}): {output[-1500:]}")


@dataclass
class PgServer:
    """A server the tests may create databases on. Only a throwaway cluster (``owned``) can be
    stopped, started and restarted: the tests never touch a server they did not start."""

    admin_url: str
    data_dir: Path | None = None
    run_as: str | None = None
    bin_dir: Path | None = None
    _tmp: Path | None = field(default=None, repr=False)

    def url_for(self, dbname: str) -> str:
        """The admin URL with ``dbname`` in place of its database (query options kept)."""
        parts = urlsplit(self.admin_url)
        return urlunsplit(parts._replace(path="/" + dbname))

    @property
    def owned(self) -> bool:
        return self.data_dir is not None

    @property
    def log_file(self) -> Path | None:
        return self._tmp / "server.log" if self._tmp is not None else None

    def _pg_ctl(self, *args: str) -> None:
        if self.bin_dir is None or self.data_dir is None:
            raise NoPostgres("only a throwaway cluster started by the tests can be controlled")
        command = [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args]
        _run(_as_user(self.run_as, command), f"pg_ctl {args[0]}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; returns once it is down (``-w``)."""
        self._pg_ctl("stop", "-w", "-m", mode)

    def start(self) -> None:
        """Start the server; returns once it accepts connections (``-w``), no polling."""
        self._pg_ctl("start", "-w", "-l", str(self.log_file))

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        """Stop a throwaway cluster and delete its files; a no-op for a server we found.
        Safe to call twice (the fixture and the atexit guard both may)."""
        if not self.owned:
            return
        with contextlib.suppress(NoPostgres, subprocess.SubprocessError, OSError):
            self.stop("immediate")
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


def _as_user(user: str | None, command: list[str]) -> list[str]:
    return ["runuser", "-u", user, "--", *command] if user else command


def probe(url: str) -> str | None:
    """None if ``url`` answers a query within about 2 s, else why not."""
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin: newest first by number, so "9.6" does not beat "15".
    return tuple(int(n) for n in re.findall(r"\d+", bin_dir.parent.name)) or (0,)


def server_binaries() -> Path | None:
    """A directory holding initdb, pg_ctl and postgres: from PATH, ``pg_config --bindir``, or
    Debian's /usr/lib/postgresql/*/bin (which Debian keeps off PATH)."""
    candidates: list[Path] = []
    initdb = shutil.which("initdb")
    if initdb:
        # resolve(): a symlink on PATH (here /usr/local/bin/initdb) points at the real bin dir,
        # and pg_ctl looks for the postgres binary next to its own real path.
        candidates.append(Path(initdb).resolve().parent)
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
            candidates.append(Path(out))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    for candidate in candidates:
        if all((candidate / name).exists() for name in ("initdb", "pg_ctl", "postgres")):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _unprivileged_user() -> str:
    """PostgreSQL refuses to run as root: use the postgres account, or make one."""
    for name in ("postgres", "jobqtest"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    try:
        _run(["useradd", "-r", "-M", "-s", "/usr/sbin/nologin", "jobqtest"], "useradd jobqtest")
    except NoPostgres:
        # Another test run may have made it between our look-up and useradd.
        with contextlib.suppress(KeyError):
            pwd.getpwnam("jobqtest")
            return "jobqtest"
        raise
    return "jobqtest"


def _others_can_enter(path: Path) -> bool:
    """Whether every directory down to ``path`` lets other users through (o+x)."""
    return all(directory.stat().st_mode & stat.S_IXOTH for directory in [path, *path.parents])


def _temp_root(run_as: str | None) -> str | None:
    # The server user must reach its data dir: a root-only TMPDIR (say under /root) would make
    # initdb fail with "permission denied", so fall back to /tmp in that case.
    default = Path(tempfile.gettempdir())
    if run_as is None or _others_can_enter(default):
        return None
    return "/tmp"


def start_throwaway() -> PgServer:
    """initdb a cluster in a temp dir (trust auth, unix socket inside it), start it on a free
    port, and return its handle. The caller calls ``destroy()``; an atexit guard does too, so
    an interrupted run does not leave a postmaster behind."""
    bin_dir = server_binaries()
    if bin_dir is None:
        raise NoPostgres(
            "no initdb/pg_ctl/postgres found (PATH, pg_config --bindir, /usr/lib/postgresql/*/bin)"
        )
    run_as = _unprivileged_user() if os.geteuid() == 0 else None
    tmp = Path(tempfile.mkdtemp(prefix="jobq-pg-", dir=_temp_root(run_as)))
    server = PgServer(admin_url="", data_dir=tmp / "data", run_as=run_as, bin_dir=bin_dir, _tmp=tmp)
    try:
        if run_as:
            account = pwd.getpwnam(run_as)
            os.chown(tmp, account.pw_uid, account.pw_gid)
        initdb = [str(bin_dir / "initdb"), "-D", str(server.data_dir), "-U", "postgres"]
        # --no-sync and fsync=off: the cluster is thrown away, durability buys nothing here.
        initdb += ["--auth=trust", "-E", "UTF8", "--no-sync"]
        _run(_as_user(run_as, initdb), "initdb")
        _configure_and_start(server, tmp)
    except BaseException:
        server.destroy()
        raise
    atexit.register(server.destroy)
    return server


def _configure_and_start(server: PgServer, tmp: Path) -> None:
    assert server.data_dir is not None
    conf = server.data_dir / "postgresql.conf"
    error: NoPostgres | None = None
    for _ in range(START_ATTEMPTS):
        port = _free_port()
        # Appended lines win over earlier ones, so a retry just appends a new port.
        with conf.open("a") as f:
            f.write(
                f"\nport = {port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{tmp}'\nfsync = off\nmax_connections = 200\n"
            )
        try:
            server.start()
        except NoPostgres as exc:
            log = (
                server.log_file.read_text() if server.log_file and server.log_file.exists() else ""
            )
            error = NoPostgres(f"throwaway cluster did not start: {exc}; log: {log[-800:]}")
            if "could not bind" not in log:
                break  # not a port clash: another try would fail the same way
            continue
        server.admin_url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        return
    assert error is not None
    raise error


def find_server() -> PgServer:
    """The server the tests use, or NoPostgres saying what was tried and how to fix it."""
    tried: list[str] = []
    if os.environ.get(FORCE_THROWAWAY_ENV):
        tried.append(f"{FORCE_THROWAWAY_ENV} is set: skipped {URL_ENV} and {LOCAL_URL}")
    else:
        url = os.environ.get(URL_ENV)
        if url:
            why = probe(url)
            if why is None:
                return PgServer(admin_url=url)
            tried.append(f"{URL_ENV} did not answer ({why})")
            # Going on is more useful than failing, but a wrong setting must not go unseen.
            warnings.warn(f"{URL_ENV} did not answer ({why}); trying others", stacklevel=2)
        why = probe(LOCAL_URL)
        if why is None:
            return PgServer(admin_url=LOCAL_URL)
        tried.append(f"{LOCAL_URL} did not answer ({why})")
    try:
        return start_throwaway()
    except (NoPostgres, subprocess.SubprocessError, OSError) as exc:
        tried.append(f"throwaway cluster: {exc}")
    raise NoPostgres(
        "PostgreSQL is needed for these tests and none could be had.\nTried:\n  - "
        + "\n  - ".join(tried)
        + f"\nFix: set {URL_ENV} to a server where the tests may CREATE DATABASE "
        "(e.g. postgresql://postgres@127.0.0.1:5432/postgres), "
        "or install PostgreSQL (apt-get install postgresql)."
    )
