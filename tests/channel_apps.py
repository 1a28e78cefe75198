"""Test support for the channel tests: a server helper, a raw V2 WebSocket client, test-only channels.

* :func:`serve` - ``async with serve(**settings) as server`` starts a node with
  pubsub, the superheroes store and an :class:`Endpoint` on an ephemeral port
  (real sockets, real time) and captures every structlog event in
  ``server.logs``.
* :class:`RawClient` - a bare trio-websocket client speaking V2 JSON frames
  by hand, for what phoenix.js would never send (bad frames, stale join_refs,
  duplicate joins) and for many concurrent clients.
* :class:`EchoChannel` - a small channel for protocol tests (echo, acked
  pushes on demand, deliberate crashes).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
from structlog.testing import capture_logs
from trio_websocket import ConnectionClosed, WebSocketConnection, connect_websocket_url

from ackvisor import ChildSpec, Node, open_node
from ackvisor.channels import Channel, Endpoint, JoinRefused, PubSub, Socket
from ackvisor.examples.superheroes import STORE_NAME, SuperheroChannel, SuperheroStore

__all__ = ["EchoChannel", "RawClient", "Server", "serve", "ROUTES", "wait_until", "past_the_ack_deadline"]


class EchoChannel(Channel):
    """``echo:*``: ``echo`` replies ok with the payload; ``push`` pushes ``pushed`` (acked if asked);
    ``crash`` raises; ``noreply`` answers nothing; a join with ``{"refuse": true}`` is refused."""

    async def join(self, topic: str, params: dict[str, Any], socket: Socket) -> Any:
        if params.get("refuse"):
            raise JoinRefused({"reason": "unauthorized"})
        if params.get("crash"):
            raise RuntimeError("join blew up")
        return {"topic": topic, "assigns": socket.assigns.as_dict()}

    async def handle_in(self, event: str, payload: Any, socket: Socket) -> Any:
        if event == "echo":
            return ("ok", payload if isinstance(payload, dict) else {"bytes": len(payload)})
        if event == "push":
            message_id = await self.push("pushed", dict(payload), ack=bool(payload.get("ack")))
            return {"message_id": message_id}
        if event == "crash":
            raise RuntimeError("handle_in blew up")
        if event == "noreply":
            return None
        return await super().handle_in(event, payload, socket)


ROUTES: dict[str, Any] = {"superheroes:*": SuperheroChannel, "echo:*": EchoChannel}


@dataclass
class Server:
    node: Node
    endpoint: Endpoint
    logs: list[dict[str, Any]]

    @property
    def url(self) -> str:
        """The base URL for phoenix.js (``ws://127.0.0.1:PORT/socket``)."""
        return self.endpoint.url

    def ws_url(self, query: str = "vsn=2.0.0", path: str = "/socket/websocket") -> str:
        """The full WebSocket URL for a raw client."""
        return f"ws://127.0.0.1:{self.endpoint.port}{path}" + (f"?{query}" if query else "")

    def events(self, event: str | None = None, **match: Any) -> list[dict[str, Any]]:
        """Captured log events named ``event`` (any if None) whose keys equal ``match``."""
        return [
            e
            for e in self.logs
            if (event is None or e.get("event") == event) and all(e.get(k) == v for k, v in match.items())
        ]

    def crash_reports(self) -> list[dict[str, Any]]:
        """Error-level events (supervisor crash reports, channel crashes)."""
        return [e for e in self.logs if e.get("log_level") == "error"]

    def connection_count(self) -> int:
        sup = self.endpoint.connections(self.node)
        assert sup is not None, "the connections supervisor is gone"
        return sup.count_children().active

    def assert_healthy(self) -> None:
        """The endpoint subtree is up: the connections supervisor and the listener are running."""
        ep = self.node.whereis(self.endpoint.id)
        assert ep is not None and ep.alive, "endpoint supervisor is down"
        states = {c.id: c.state for c in ep.which_children()}  # type: ignore[attr-defined]
        assert states == {"connections": "running", "listener": "running"}, states
        assert not self.events("child_restarted"), self.events("child_restarted")
        assert not self.events("max_restart_intensity_reached")


@asynccontextmanager
async def serve(
    routes: Mapping[str, Any] | None = None, *, connect: Callable[..., Any] | None = None, **settings: Any
) -> AsyncIterator[Server]:
    """A node with pubsub, the superheroes store and an endpoint (``port=0``) for the block."""
    settings.setdefault("port", 0)
    with capture_logs() as logs:
        async with open_node("test") as node:
            endpoint = Endpoint(dict(routes or ROUTES), connect=connect, **settings)
            await node.start_supervisor(
                [
                    ChildSpec("pubsub", PubSub, name="pubsub"),
                    ChildSpec("store", SuperheroStore, name=STORE_NAME),
                    endpoint.child_spec(),
                ]
            )
            await endpoint.wait_listening()
            yield Server(node, endpoint, logs)


async def wait_until(predicate: Callable[[], Any], *, timeout: float = 5, what: str = "condition") -> Any:
    """Poll ``predicate`` (cheap, in-process state) every few ms until it is truthy."""
    with trio.move_on_after(timeout):
        while not (result := predicate()):
            await trio.sleep(0.005)
        return result
    raise AssertionError(f"{what} not met within {timeout} s")


@dataclass
class RawClient:
    """A raw V2 client: frames are lists ``[join_ref, ref, topic, event, payload]``."""

    ws: WebSocketConnection
    received: list[Any] = field(default_factory=list)  # every frame ever read, in order
    unclaimed: list[Any] = field(default_factory=list)  # frames read but not returned by expect yet
    _refs: Any = None

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, **kwargs: Any) -> AsyncIterator["RawClient"]:
        async with trio.open_nursery() as nursery:
            ws = await connect_websocket_url(nursery, url, **kwargs)
            client = cls(ws)
            try:
                yield client
            finally:
                with trio.move_on_after(2) as scope:
                    scope.shield = True
                    await ws.aclose()
                nursery.cancel_scope.cancel()

    @classmethod
    async def connect(cls, nursery: trio.Nursery, url: str, **kwargs: Any) -> "RawClient":
        return cls(await connect_websocket_url(nursery, url, **kwargs))

    def next_ref(self) -> str:
        if self._refs is None:
            self._refs = iter(range(1, 1 << 30))
        return str(next(self._refs))

    async def send(self, join_ref: Any, ref: Any, topic: str, event: str, payload: Any = None) -> None:
        await self.ws.send_message(json.dumps([join_ref, ref, topic, event, {} if payload is None else payload]))

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send_message(data)

    async def _read(self, timeout: float) -> Any:
        with trio.fail_after(timeout):
            data = await self.ws.get_message()
        frame = json.loads(data) if isinstance(data, str) else data
        self.received.append(frame)
        return frame

    async def recv(self, *, timeout: float = 5) -> Any:
        """The next unclaimed frame, decoded (bytes frames are returned as bytes)."""
        if self.unclaimed:
            return self.unclaimed.pop(0)
        return await self._read(timeout)

    async def expect(self, predicate: Callable[[Any], bool], *, timeout: float = 5) -> Any:
        """The first unclaimed frame matching ``predicate`` (reading more as needed); frames skipped
        on the way stay unclaimed for later ``expect``/``recv`` calls."""
        for i, frame in enumerate(self.unclaimed):
            if predicate(frame):
                return self.unclaimed.pop(i)
        with trio.fail_after(timeout):
            while True:
                frame = await self._read(timeout)
                if predicate(frame):
                    return frame
                self.unclaimed.append(frame)

    async def expect_event(self, topic: str, event: str, *, timeout: float = 5) -> list:
        return await self.expect(lambda f: isinstance(f, list) and f[2] == topic and f[3] == event, timeout=timeout)

    async def reply_to(self, ref: str, *, timeout: float = 5) -> list:
        return await self.expect(lambda f: isinstance(f, list) and f[1] == ref and f[3] == "phx_reply", timeout=timeout)

    async def call(self, join_ref: Any, topic: str, event: str, payload: Any = None, *, timeout: float = 5) -> list:
        """Send a message with a fresh ref and return its ``phx_reply`` frame."""
        ref = self.next_ref()
        await self.send(join_ref, ref, topic, event, payload)
        return await self.reply_to(ref, timeout=timeout)

    async def join(self, topic: str, payload: Any = None, *, timeout: float = 5) -> tuple[str, list]:
        """Join ``topic``; returns ``(join_ref, reply_frame)``."""
        ref = self.next_ref()
        await self.send(ref, ref, topic, "phx_join", payload)
        return ref, await self.reply_to(ref, timeout=timeout)

    async def heartbeat(self, *, timeout: float = 5) -> list:
        return await self.call(None, "phoenix", "heartbeat", timeout=timeout)

    async def closed(self, *, timeout: float = 5) -> int:
        """Read until the server closes; returns the close code."""
        with trio.fail_after(timeout):
            try:
                while True:
                    self.unclaimed.append(await self._read(timeout))
            except ConnectionClosed as e:
                assert e.reason is not None
                return e.reason.code


async def past_the_ack_deadline(server: Server, topic: str = "superheroes:lobby") -> dict[str, Any]:
    """Make the passing of the ack deadline observable: a canary client joins ``topic`` and never
    acks its hydrate; once it crashed for no_ack_received (socket closed 1011, or phx_error under
    ``on_no_ack="error_channel"``), every ack deadline armed before its hydrate was written has
    passed too. Returns the canary's crash report."""
    async with RawClient.open(server.ws_url()) as canary:
        join_ref, _ = await canary.join(topic)
        hydrate = await canary.expect_event(topic, "hydrate")
        if server.endpoint.settings.on_no_ack == "error_channel":
            err = await canary.expect_event(topic, "phx_error", timeout=10)
            assert err[0] == join_ref
        else:
            assert await canary.closed(timeout=10) == 1011
    message_id = hydrate[4]["message_id"]
    # the close frame is written by the connection's terminate; the report follows its exit
    return await wait_until(
        lambda: next((e for e in server.crash_reports() if e.get("message_id") == message_id), None),
        what="the canary's crash report",
    )
