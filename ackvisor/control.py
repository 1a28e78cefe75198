"""The daemon's local control socket: ``ackvisor tree`` reads the live tree through it.

A unix stream socket next to the pid file, created with owner-only
permissions (0600).  Protocol: the client sends one request line (``tree``),
the server answers one JSON document and closes.  Nothing but the local
owner can connect, and nothing on it can change the tree.
"""

from __future__ import annotations

import json
import os
import socket as stdlib_socket
from pathlib import Path
from typing import Any, Callable

import structlog
import trio

__all__ = ["serve_control", "request_control", "ControlError", "socket_in_use"]

log = structlog.get_logger("ackvisor.daemon")

_MAX_REQUEST = 256


class ControlError(Exception):
    """The control socket could not be reached or answered nonsense."""


def socket_in_use(path: Path) -> bool:
    """True if a live daemon answers on ``path`` (a stale socket file returns False)."""
    if not path.exists():
        return False
    probe = stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


async def serve_control(
    path: Path,
    answer: Callable[[str], Any],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``answer(request) -> JSON-able`` on the unix socket ``path`` until cancelled; removes it on exit."""
    if path.exists():
        path.unlink()
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket file is created 0600: owner only
    try:
        await sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(16)
    listener = trio.SocketListener(sock)

    async def handle(stream: trio.SocketStream) -> None:
        try:
            with trio.move_on_after(5):
                data = b""
                while b"\n" not in data and len(data) < _MAX_REQUEST:
                    chunk = await stream.receive_some(_MAX_REQUEST)
                    if not chunk:
                        break
                    data += chunk
                request = data.decode("utf-8", "replace").strip()
                try:
                    body = answer(request)
                except Exception as e:  # never let a bad request touch the node
                    body = {"error": f"{type(e).__name__}: {e}"}
                await stream.send_all(json.dumps(body, default=str).encode() + b"\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, handle, [listener])
            task_status.started()
    finally:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(listener)
        try:
            path.unlink()
        except FileNotFoundError:
            pass


async def request_control(path: Path, request: str = "tree", *, timeout: float = 5.0) -> Any:
    """Send ``request`` to the daemon listening on ``path`` and return its decoded JSON answer."""
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_unix_socket(str(path))
            async with stream:
                await stream.send_all(request.encode() + b"\n")
                chunks = []
                while True:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
    except (OSError, trio.TooSlowError) as e:
        raise ControlError(f"no daemon answering on {path}: {e}") from None
    try:
        return json.loads(b"".join(chunks))
    except ValueError as e:
        raise ControlError(f"bad answer from {path}: {e}") from None
