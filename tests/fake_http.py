"""A tiny HTTP/1.1 server on 127.0.0.1 for fault tests of HTTP clients.

It runs its own event loop in a background thread; a handler decides the raw bytes of each
answer, so tests can send malformed JSON, cut a body short, answer slowly, or die mid-request
(`kill()` drops every open connection and stops listening, as a crashed server would).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass
class FakeRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body or b"null")


#: handler(request) -> raw response bytes, or None to close the connection without answering
Handler = Callable[[FakeRequest], Awaitable["bytes | None"]]


def response(status: int = 200, body=b"", *, content_type: str = "application/json",
             content_length: int | None = None, close: bool = False) -> bytes:
    """Raw HTTP response bytes; `body` may be a dict (JSON-encoded). `content_length` may lie."""
    if not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    length = len(body) if content_length is None else content_length
    head = (f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n"
            + ("Connection: close\r\n" if close else "") + "\r\n")
    return head.encode() + body


class FakeHTTPServer:
    def __init__(self, handler: Handler, port: int = 0):
        self.handler = handler
        self.requests: list[FakeRequest] = []
        self.port: int | None = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-http", daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeHTTPServer:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", self.port), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = FakeRequest(method, path, headers, body)
                self.requests.append(request)
                raw = await self.handler(request)
                if raw is None:
                    break
                writer.write(raw)
                await writer.drain()
                if b"Connection: close" in raw.split(b"\r\n\r\n", 1)[0]:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def kill(self) -> None:
        """Stop listening and drop every open connection at once (what a crash looks like)."""
        async def _kill():
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
        asyncio.run_coroutine_threadsafe(_kill(), self._loop).result(10)

    def stop(self) -> None:
        if self._loop.is_closed():
            return

        async def _cancel_all():
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.kill()
            asyncio.run_coroutine_threadsafe(_cancel_all(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> FakeHTTPServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
