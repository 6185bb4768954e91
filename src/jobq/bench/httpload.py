"""A small keep-alive HTTP/1.1 load generator: fixed connections, each sending requests back
to back. Raw asyncio streams keep the client's own cost low on a 2-core machine, where the
client competes with the server for CPU."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    requests: int
    seconds: float
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)


async def _connection(host: str, port: int, request: bytes, count: int, result: LoadResult) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for _ in range(count):
            began = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            result.latencies.append(time.perf_counter() - began)
            status = int(status_line.split()[1])
            result.statuses[status] = result.statuses.get(status, 0) + 1
    finally:
        writer.close()


async def post_load(
    host: str, port: int, path: str, body: bytes, *, connections: int, per_connection: int
) -> LoadResult:
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    result = LoadResult(requests=connections * per_connection, seconds=0.0)
    began = time.perf_counter()
    await asyncio.gather(
        *(_connection(host, port, request, per_connection, result) for _ in range(connections))
    )
    result.seconds = time.perf_counter() - began
    return result
