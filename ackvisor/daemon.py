"""The daemon: builds the default tree from a config and runs it until stopped.

Default tree (DESIGN.md)::

    root (config [root])
    ├── pubsub                 worker
    ├── <one supervisor per subtree in config / supervisors/*.toml>
    └── endpoint               supervisor (rest_for_one): connections, listener

Signals:

* SIGTERM / SIGINT - graceful drain: stop accepting, close every socket with
  1001 spread over ``node.drain_window``, stop the tree in reverse start
  order within the shutdown timeouts (bounded by ``node.shutdown_timeout``),
  exit 0.  A second signal forces an immediate stop (every actor killed).
* SIGHUP - reload: validate the file first (on error keep running on the old
  config and log why), then apply the difference: restart only the children
  whose spec changed, start added ones, stop removed ones.  A changed
  ``[endpoint]``/``[channels]`` restarts the endpoint subtree.

If the root supervisor gives up (max restart intensity), the daemon logs
``node_down`` and exits 1, so systemd or a container runtime restarts it.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import structlog
import trio

from .childspec import ChildSpec
from .channels.endpoint import Endpoint, EndpointSettings
from .channels.pubsub import PubSub
from .config import ChildConfig, ConfigError, NodeConfig, SupervisorConfig, load_config
from .control import serve_control, socket_in_use
from .exits import Killed, reason_fields
from .node import Node, open_node
from .supervisor import SupervisorRef

__all__ = ["Daemon", "child_spec_from_config", "endpoint_from_config", "root_children"]

log = structlog.get_logger("ackvisor.daemon")

EXIT_OK = 0
EXIT_NODE_DOWN = 1


def _shutdown_value(value: Any) -> Any:
    return math.inf if value == "infinity" else value


def child_spec_from_config(child: ChildConfig | SupervisorConfig) -> ChildSpec:
    """Turn a validated child or subtree config into the runtime's ChildSpec."""
    if isinstance(child, SupervisorConfig):
        return ChildSpec.supervisor(
            child.id,
            [child_spec_from_config(c) for c in child.children],
            strategy=child.strategy,
            max_restarts=child.max_restarts,
            max_seconds=child.max_seconds,
            restart=child.restart,
            shutdown=_shutdown_value(child.shutdown),
            name=child.name,
        )
    args, kwargs = child.start_arguments()
    return ChildSpec(
        child.id,
        child.target,
        *args,
        kwargs=kwargs,
        restart=child.restart,
        shutdown=_shutdown_value(child.shutdown),
        type=child.type,
        name=child.name,
    )


def endpoint_from_config(config: NodeConfig) -> Endpoint:
    """The endpoint described by ``[endpoint]`` and ``[channels]``."""
    ep, ch = config.endpoint, config.channels
    settings = EndpointSettings(
        host=ep.host,
        port=ep.port,
        path=ep.path,
        check_origin=ep.check_origin,
        max_frame_bytes=ep.max_frame_bytes,
        heartbeat_timeout=ep.heartbeat_timeout,
        max_channels=ep.max_channels_per_socket,
        ack_timeout=ch.ack_timeout,
        on_no_ack=ch.on_no_ack,
    )
    return Endpoint({r.pattern: r.cls for r in ch.routes}, settings)


def root_children(config: NodeConfig, endpoint: Endpoint) -> list[ChildSpec]:
    """The root's children in start order: pubsub, the subtrees, the endpoint."""
    return [
        ChildSpec("pubsub", PubSub, config.pubsub.adapter, name="pubsub"),
        *(child_spec_from_config(s) for s in config.subtrees),
        endpoint.child_spec(),
    ]


@dataclass
class _ReloadResult:
    started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)


class Daemon:
    """One daemon process: ``await Daemon(config).serve()`` returns the exit code."""

    def __init__(self, config: NodeConfig, *, overrides: tuple[str, ...] = (), out: TextIO | None = None) -> None:
        self.config = config
        self.overrides = overrides
        self.out = out if out is not None else sys.stdout
        self.node: Node | None = None
        self.root: SupervisorRef | None = None
        self.endpoint: Endpoint | None = None
        self.started_at = time.time()
        self._stopping = trio.Event()
        self._exit_code = EXIT_OK
        self._signals_seen = 0

    # ----- entry point

    async def serve(self) -> int:
        """Run until SIGTERM/SIGINT (exit 0) or until the root gives up (exit 1)."""
        config = self.config
        control_path = config.node.control_socket
        if socket_in_use(control_path):
            log.error("already_running", control_socket=str(control_path))
            print(f"ackvisor: a daemon is already running (control socket {control_path})", file=sys.stderr)
            return 2
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async with trio.open_nursery() as outer:
                outer.start_soon(self._signal_loop, signals)
                try:
                    await self._run_node()
                finally:
                    outer.cancel_scope.cancel()
        return self._exit_code

    async def _run_node(self) -> None:
        config = self.config
        async with open_node(config.node.name) as node:
            self.node = node
            self.endpoint = endpoint_from_config(config)
            self.root = await node.start_supervisor(
                root_children(config, self.endpoint),
                strategy=config.root.strategy,
                max_restarts=config.root.max_restarts,
                max_seconds=config.root.max_seconds,
                name="root",
            )
            self._write_pid()
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(serve_control, config.node.control_socket, self._answer)
                    nursery.start_soon(self._watch_root)
                    print(f"ackvisor node {config.node.name!r} listening on {self.endpoint.url} (pid {os.getpid()})", file=self.out, flush=True)
                    log.info("node_started", node=config.node.name, url=self.endpoint.url, pid=os.getpid())
                    await self._stopping.wait()
                    if self._exit_code == EXIT_OK:
                        await self._drain_and_stop()
                    nursery.cancel_scope.cancel()
            finally:
                self._remove_pid()

    # ----- signals

    async def _signal_loop(self, signals: Any) -> None:
        async for signum in signals:
            if signum == signal.SIGHUP:
                if not self._stopping.is_set():
                    await self.reload()
                continue
            self._signals_seen += 1
            if self._signals_seen == 1:
                log.info("shutdown_requested", signal=signal.Signals(signum).name)
                self._stopping.set()
            else:
                log.warning("shutdown_forced", signal=signal.Signals(signum).name)
                self._kill_everything()

    def _kill_everything(self) -> None:
        if self.node is not None:
            for ref in self.node.actors():
                ref._cell.kill()

    async def _watch_root(self) -> None:
        assert self.root is not None
        reason = await self.root.wait()
        if not self._stopping.is_set():
            log.error("node_down", node=self.config.node.name, **reason_fields(reason))
            self._exit_code = EXIT_NODE_DOWN
            self._stopping.set()

    async def _drain_and_stop(self) -> None:
        """Stop accepting, close sockets with 1001 over the drain window, then stop the tree in order."""
        node, root, endpoint = self.node, self.root, self.endpoint
        assert node is not None and root is not None and endpoint is not None
        deadline = trio.current_time() + self.config.node.shutdown_timeout
        with trio.move_on_at(deadline) as bounded:
            ep_sup = self._child_ref(root, endpoint.id)
            if isinstance(ep_sup, SupervisorRef):
                await ep_sup.terminate_child("listener")
            drained = await endpoint.drain(node, window=self.config.node.drain_window)
            log.info("drained", connections=drained, window_s=self.config.node.drain_window)
            await node.shutdown()
        if bounded.cancelled_caught:
            log.warning("shutdown_timeout", seconds=self.config.node.shutdown_timeout)
            self._kill_everything()
        log.info("node_stopped", node=self.config.node.name)

    # ----- reload (SIGHUP)

    async def reload(self) -> _ReloadResult | None:
        """Reload the config file; apply the difference or keep the old config if invalid."""
        try:
            new = load_config(self.config.path, overrides=self.overrides)
        except ConfigError as e:
            log.error("reload_failed", file=str(self.config.path), problems=[str(p) for p in e.problems])
            return None
        except OSError as e:
            log.error("reload_failed", file=str(self.config.path), problems=[str(e)])
            return None
        result = await self._apply(self.config, new)
        self.config = new
        log.info("reload_applied", started=result.started, stopped=result.stopped, restarted=result.restarted)
        return result

    async def _apply(self, old: NodeConfig, new: NodeConfig) -> _ReloadResult:
        root = self.root
        assert root is not None
        result = _ReloadResult()
        old_subtrees = {s.id: s for s in old.subtrees}
        new_subtrees = {s.id: s for s in new.subtrees}
        for sid in old_subtrees:
            if sid not in new_subtrees:
                await self._remove(root, sid)
                result.stopped.append(sid)
        for sid, sub in new_subtrees.items():
            before = old_subtrees.get(sid)
            if before is None:
                await root.start_child(child_spec_from_config(sub))
                result.started.append(sid)
            elif before != sub:
                await self._apply_subtree(root, before, sub, result)
        if (old.endpoint, old.channels) != (new.endpoint, new.channels):
            assert self.endpoint is not None
            await self._remove(root, self.endpoint.id)
            self.endpoint = endpoint_from_config(new)
            await root.start_child(self.endpoint.child_spec())
            result.restarted.append(self.endpoint.id)
        return result

    async def _apply_subtree(self, parent: SupervisorRef, old: SupervisorConfig, new: SupervisorConfig, result: _ReloadResult) -> None:
        flags = ("strategy", "max_restarts", "max_seconds", "restart", "shutdown", "name")
        sup = self._child_ref(parent, new.id)
        if any(getattr(old, f) != getattr(new, f) for f in flags) or not isinstance(sup, SupervisorRef):
            await self._remove(parent, new.id)
            await parent.start_child(child_spec_from_config(new))
            result.restarted.append(new.id)
            return
        old_children = {c.id: c for c in old.children}
        new_children = {c.id: c for c in new.children}
        for cid in old_children:
            if cid not in new_children:
                await self._remove(sup, cid)
                result.stopped.append(f"{new.id}/{cid}")
        for cid, child in new_children.items():
            before = old_children.get(cid)
            if before is None:
                await sup.start_child(child_spec_from_config(child))
                result.started.append(f"{new.id}/{cid}")
            elif before != child:
                if isinstance(before, SupervisorConfig) and isinstance(child, SupervisorConfig):
                    await self._apply_subtree(sup, before, child, result)
                    continue
                await self._remove(sup, cid)
                await sup.start_child(child_spec_from_config(child))
                result.restarted.append(f"{new.id}/{cid}")

    @staticmethod
    def _child_ref(sup: SupervisorRef, child_id: str) -> Any:
        for info in sup.which_children():
            if info.id == child_id:
                return info.ref
        return None

    @staticmethod
    async def _remove(sup: SupervisorRef, child_id: str) -> None:
        await sup.terminate_child(child_id)
        try:
            await sup.delete_child(child_id)
        except Exception:
            pass  # temporary children are gone once terminated

    # ----- introspection

    def _answer(self, request: str) -> Any:
        if request not in ("tree", ""):
            return {"error": f"unknown request {request[:40]!r}; try 'tree'"}
        node = self.node
        return {
            "node": self.config.node.name,
            "pid": os.getpid(),
            "config": str(self.config.path),
            "uptime_s": round(time.time() - self.started_at, 3),
            "url": self.endpoint.url if self.endpoint is not None and self.endpoint.addresses else None,
            "actors": node.actor_count if node is not None else 0,
            "tree": node.tree() if node is not None else [],
        }

    # ----- pid file

    def _write_pid(self) -> None:
        path = self.config.node.pid_file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{os.getpid()}\n")

    def _remove_pid(self) -> None:
        try:
            path = self.config.node.pid_file
            if path.read_text().strip() == str(os.getpid()):
                path.unlink()
        except OSError:
            pass


_ = Killed
