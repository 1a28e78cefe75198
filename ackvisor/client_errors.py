"""Errors raised by the Phoenix client, and :class:`CloseInfo` (how a connection ended)."""

from __future__ import annotations

from typing import Any, NamedTuple


# --------------------------------------------------------------------------
# Errors and small value types


class PhoenixClientError(Exception):
    """Base class of every error raised by this module."""


class ClientClosed(PhoenixClientError):
    """The socket is closed and will not come back (``reconnect=False``,
    :meth:`PhoenixClient.disconnect`, or the client's ``open()`` block ended)."""

    def __init__(self, close: "CloseInfo | None" = None, detail: str = "client closed") -> None:
        super().__init__(close, detail)
        self.close = close
        self.detail = detail

    def __str__(self) -> str:
        if self.close is None:
            return self.detail
        return f"{self.detail} (code={self.close.code}, reason={self.close.reason!r})"


class ConnectError(PhoenixClientError):
    """``open()`` could not connect (only raised when ``reconnect=False``)."""

    def __init__(self, url: str, cause: BaseException | None = None) -> None:
        super().__init__(url, cause)
        self.url = url
        self.cause = cause

    def __str__(self) -> str:
        return f"could not connect to {self.url}: {self.cause!r}"


class NotConnected(PhoenixClientError):
    """:meth:`PhoenixClient.send_raw` was called while no connection is open."""


class ChannelClosed(PhoenixClientError):
    """The channel was left (:meth:`ClientChannel.leave`), closed by the server
    (``phx_close``), or replaced by a newer join of the same topic."""

    def __init__(self, topic: str, reason: str = "closed") -> None:
        super().__init__(topic, reason)
        self.topic = topic
        self.reason = reason

    def __str__(self) -> str:
        return f"channel {self.topic!r} closed: {self.reason}"


class JoinError(PhoenixClientError):
    """The server answered the first ``phx_join`` with a non-ok status."""

    def __init__(self, topic: str, response: Any, status: str = "error") -> None:
        super().__init__(topic, response, status)
        self.topic = topic
        self.response = response
        self.status = status

    def __str__(self) -> str:
        return f"join {self.topic!r} failed ({self.status}): {self.response!r}"


class JoinTimeout(PhoenixClientError, TimeoutError):
    """No reply to the first join within the ``timeout`` given to :meth:`PhoenixClient.join`."""

    def __init__(self, topic: str, timeout: float) -> None:
        super().__init__(topic, timeout)
        self.topic = topic
        self.timeout = timeout

    def __str__(self) -> str:
        return f"join {self.topic!r} got no reply within {self.timeout} s"


class PushTimeout(PhoenixClientError, TimeoutError):
    """No reply to a push within its timeout (purely local, like phoenix.js)."""

    def __init__(self, topic: str, event: str, timeout: float) -> None:
        super().__init__(topic, event, timeout)
        self.topic = topic
        self.event = event
        self.timeout = timeout

    def __str__(self) -> str:
        return f"push {self.event!r} on {self.topic!r} got no reply within {self.timeout} s"


class PushInterrupted(PhoenixClientError):
    """The push was sent but its channel join ended (``phx_error``, socket
    closed) before the reply came; the server may or may not have handled it."""

    def __init__(self, topic: str, event: str, reason: str) -> None:
        super().__init__(topic, event, reason)
        self.topic = topic
        self.event = event
        self.reason = reason

    def __str__(self) -> str:
        return f"push {self.event!r} on {self.topic!r} interrupted: {self.reason}"


def _fresh(exc: BaseException) -> BaseException:
    """A new instance of a stored error, so tracebacks do not pile up on one object."""
    return exc.__class__(*exc.args)


class CloseInfo(NamedTuple):
    """How one connection ended: the WebSocket close ``code`` and ``reason``.

    Server closes report the server's code; an abrupt TCP loss is 1006; closes
    made by this client report the code it sent (1000 for ``disconnect()``
    and for a heartbeat timeout, whose reason is ``"heartbeat timeout"``).
    """

    code: int
    reason: str | None
