"""Several "hosts" on this machine: one network namespace each, joined by veth pairs to a
bridge on the host side, where a throwaway PostgreSQL listens. ``jobq api`` and ``jobq
worker`` run inside the namespaces (``ip netns exec``), so each host reaches the database
over its own link, which can be cut (``ip link set ... down``) or whose processes can be
killed all at once, as when a machine dies.

The addresses are a /24 of 10.231.0.0/16 that no interface here uses, on the bridge and
veths made for the run; names carry a random run id, so two runs do not collide. Everything
is removed on exit, also when the code inside fails. Needs root (``unavailable`` says why
not).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .cluster import Cluster, create_primary
from .stopping import stop_processes

NETWORK_PREFIX = "10.231"
STOP_TIMEOUT_S = 30.0
API_START_TIMEOUT_S = 60.0


def unavailable() -> str | None:
    """None if namespaces can be made here, else why not (for a test's skip)."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    if shutil.which("ip") is None:
        return "no 'ip' command (apt-get install iproute2)"
    probe = f"jobq-probe-{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot make a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _free_subnet() -> str:
    """A 10.231.x prefix with no address on any interface of this machine."""
    shown = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
    taken = {
        int(word.split(".")[2]) for word in shown.split() if word.startswith(NETWORK_PREFIX + ".")
    }
    free = [x for x in range(256) if x not in taken]
    if not free:
        raise RuntimeError(f"no free /24 in {NETWORK_PREFIX}.0.0/16")
    return f"{NETWORK_PREFIX}.{free[secrets.randbelow(len(free))]}"


@dataclass
class Host:
    """One namespace: its address, the host-side end of its link, what runs in it."""

    index: int
    namespace: str
    address: str
    link: str  # the host-side veth: down cuts the host off
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)


@dataclass
class HostNetwork:
    run_id: str
    subnet: str  # "10.231.x"
    bridge: str
    logs: Path
    hosts: list[Host] = field(default_factory=list)
    _logs_of: dict[int, Path] = field(default_factory=dict)

    @property
    def server_address(self) -> str:
        """The host side of every link, where the database listens."""
        return f"{self.subnet}.1"

    @property
    def cidr(self) -> str:
        return f"{self.subnet}.0/24"

    def add_host(self) -> Host:
        index = len(self.hosts)
        host = Host(
            index,
            f"jobq-{self.run_id}-{index}",
            f"{self.subnet}.{10 + index}",
            f"jq{self.run_id}h{index}",
        )
        inside = f"jq{self.run_id}n{index}"
        self.hosts.append(host)  # listed first, so teardown removes even a half-made host
        _ip("netns", "add", host.namespace)
        _ip("link", "add", host.link, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", host.namespace)
        _ip("link", "set", host.link, "master", self.bridge, "up")
        _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", inside)
        _ip("-n", host.namespace, "link", "set", inside, "up")
        _ip("-n", host.namespace, "link", "set", "lo", "up")
        return host

    def spawn(
        self,
        host: Host,
        args: Sequence[str],
        env: Mapping[str, str],
        *,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """``python -m jobq.cli <args>`` inside ``host``; its output goes to a log file."""
        log = self.logs / f"{host.namespace}-{len(host.processes)}.log"
        command = ["ip", "netns", "exec", host.namespace, sys.executable, "-m", "jobq.cli"]
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*command, *args],
                env={**os.environ, **env},
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        host.processes.append(process)
        self._logs_of[process.pid] = log
        return process

    def output(self, process: subprocess.Popen[bytes]) -> str:
        return self._logs_of[process.pid].read_text(errors="replace")

    def cut(self, host: Host) -> None:
        _ip("link", "set", host.link, "down")

    def restore(self, host: Host) -> None:
        _ip("link", "set", host.link, "up")

    def kill(self, host: Host) -> None:
        """The machine dies: every process in it killed at once, no goodbyes."""
        for process in host.processes:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL)
        for process in host.processes:
            process.wait()

    def stop(self, processes: Sequence[subprocess.Popen[bytes]]) -> list[int]:
        """SIGTERM, then the exit codes (a process that overstays is killed)."""
        return stop_processes(processes, STOP_TIMEOUT_S)

    def teardown(self) -> None:
        for host in self.hosts:
            for process in host.processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            subprocess.run(["ip", "link", "del", host.link], capture_output=True)
            subprocess.run(["ip", "netns", "del", host.namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        shutil.rmtree(self.logs, ignore_errors=True)


@contextlib.contextmanager
def host_network(hosts: int) -> Iterator[HostNetwork]:
    """A bridge on the host side and ``hosts`` namespaces linked to it; all removed on exit."""
    run_id = secrets.token_hex(2)
    network = HostNetwork(
        run_id,
        _free_subnet(),
        f"jq{run_id}br",
        Path(tempfile.mkdtemp(prefix="jobq-hosts-")),
    )
    try:
        _ip("link", "add", network.bridge, "type", "bridge")
        _ip("addr", "add", f"{network.server_address}/24", "dev", network.bridge)
        _ip("link", "set", network.bridge, "up")
        for _ in range(hosts):
            network.add_host()
        yield network
    finally:
        network.teardown()


@contextlib.contextmanager
def hosts_on_one_primary(
    hosts: int, *, extra_conf: str = ""
) -> Iterator[tuple[HostNetwork, Cluster]]:
    """The network and a throwaway primary listening on loopback and on the host side of
    the links, trusting the run's /24; both removed on exit."""
    with host_network(hosts) as network:
        primary = create_primary(["127.0.0.1", network.server_address], [network.cidr], extra_conf)
        try:
            yield network, primary
        finally:
            primary.destroy()


def wait_for_api(base_url: str, process: subprocess.Popen[bytes], network: HostNetwork) -> None:
    """Until ``base_url`` answers /health (the API is up), or fail with its output."""
    deadline = time.monotonic() + API_START_TIMEOUT_S
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                return
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"jobq api did not come up: {network.output(process)[-2000:]}")
        time.sleep(0.05)  # between probes of a condition with a deadline
