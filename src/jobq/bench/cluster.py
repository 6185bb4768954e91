"""Throwaway PostgreSQL clusters made with the installed server binaries: a primary that
listens where the multi-host harness needs it, and streaming replicas of it
(``pg_basebackup -R``). For the ``hosts`` benchmark and the scale-out tests; files and
servers are removed by ``destroy``."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

COMMAND_TIMEOUT_S = 120


class ClusterError(RuntimeError):
    """A cluster could not be made or started; the message holds the server's words."""


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        raise ClusterError(
            f"{what} failed ({done.returncode}): {(done.stdout + done.stderr)[-1500:]}"
        )


def server_bin_dir() -> Path | None:
    """Where initdb, pg_ctl, pg_basebackup and postgres are: Debian keeps them off PATH."""
    candidates = []
    if found := shutil.which("pg_ctl"):
        candidates.append(Path(found).resolve().parent)
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(versions, key=lambda p: [int(n) for n in re.findall(r"\d+", str(p))])[::-1]
    needed = ("initdb", "pg_ctl", "postgres", "pg_basebackup")
    return next((c for c in candidates if all((c / n).exists() for n in needed)), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Cluster:
    """One running server (``initdb``'d here or copied from a primary), trust auth."""

    bin_dir: Path
    folder: Path
    port: int
    run_as: str | None

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, dbname: str = "postgres", host: str = "127.0.0.1") -> str:
        return f"postgresql://postgres@{host}:{self.port}/{dbname}"

    @property
    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data / "postmaster.pid").read_text().splitlines()[0])
        return None

    def _as_server_user(self, command: list[str]) -> list[str]:
        return ["runuser", "-u", self.run_as, "--", *command] if self.run_as else command

    def pg_ctl(self, *args: str) -> None:
        command = [str(self.bin_dir / "pg_ctl"), "-D", str(self.data), *args]
        _run(self._as_server_user(command), f"pg_ctl {args[0]}")

    def start(self) -> None:
        self.pg_ctl("start", "-w", "-l", str(self.folder / "server.log"))

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("stop", "-w", "-m", mode)

    def destroy(self) -> None:
        """Stop the server (immediately: it is thrown away) and delete its files."""
        with contextlib.suppress(ClusterError, subprocess.SubprocessError, OSError):
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)

    def configure(self, listen: Sequence[str], extra: str = "") -> None:
        # Appended lines win over earlier ones (a replica's copy of the primary's included).
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nport = {self.port}\nlisten_addresses = '{','.join(listen)}'\n"
                f"unix_socket_directories = '{self.folder}'\n{extra}\n"
            )

    def replica(self, listen: Sequence[str] = ("127.0.0.1",)) -> Cluster:
        """A streaming replica of this cluster (``pg_basebackup -R``), started."""
        copy = _new_cluster(self.bin_dir, self.run_as)
        try:
            backup = [str(self.bin_dir / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.port)]
            backup += ["-U", "postgres", "-D", str(copy.data), "-R", "-X", "stream", "--no-sync"]
            _run(copy._as_server_user(backup), "pg_basebackup")
            copy.configure(listen)
            copy.start()
        except BaseException:
            copy.destroy()
            raise
        return copy


def _server_user() -> str | None:
    """PostgreSQL refuses to run as root: as root, the postgres account runs it."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres").pw_name
    except KeyError as exc:
        raise ClusterError("running as root with no 'postgres' account to run a server") from exc


def _new_cluster(bin_dir: Path, run_as: str | None) -> Cluster:
    folder = Path(tempfile.mkdtemp(prefix="jobq-cluster-", dir="/tmp"))
    if run_as:
        account = pwd.getpwnam(run_as)
        os.chown(folder, account.pw_uid, account.pw_gid)
    return Cluster(bin_dir, folder, _free_port(), run_as)


def create_primary(
    listen: Sequence[str] = ("127.0.0.1",), trusted: Sequence[str] = (), extra: str = ""
) -> Cluster:
    """A new primary listening on ``listen``, trusting clients from the ``trusted`` networks
    (CIDR) besides loopback, ready for replicas; started."""
    bin_dir = server_bin_dir()
    if bin_dir is None:
        raise ClusterError("no PostgreSQL server binaries (apt-get install postgresql)")
    cluster = _new_cluster(bin_dir, _server_user())
    try:
        initdb = [str(bin_dir / "initdb"), "-D", str(cluster.data), "-U", "postgres"]
        initdb += ["--auth=trust", "-E", "UTF8", "--no-sync"]
        _run(cluster._as_server_user(initdb), "initdb")
        with (cluster.data / "pg_hba.conf").open("a") as hba:
            hba.writelines(f"host all all {net} trust\n" for net in trusted)
        # fsync off: the cluster is thrown away; CPU and WAL volume are what is measured.
        cluster.configure(listen, "fsync = off\nmax_connections = 300\n" + extra)
        cluster.start()
    except BaseException:
        cluster.destroy()
        raise
    return cluster


@contextlib.contextmanager
def primary_and_replica(
    listen: Sequence[str] = ("127.0.0.1",), trusted: Sequence[str] = ()
) -> Iterator[tuple[Cluster, Cluster]]:
    """A primary and a streaming replica of it, both destroyed on exit."""
    primary = create_primary(listen, trusted)
    try:
        standby = primary.replica()
        try:
            yield primary, standby
        finally:
            standby.destroy()
    finally:
        primary.destroy()
