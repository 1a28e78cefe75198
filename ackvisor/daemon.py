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
  exit 0.  A second signal forces an immediate stop (the drain is abandoned,
  every actor killed; ``shutdown_forced`` is logged) and still exits 0: the
  stop was asked for.
* SIGHUP - reload: validate the file first (on error keep running on the old
  config and log ``reload_failed`` with every problem), then apply the
  difference: restart only the children whose spec changed, start added
  ones, stop removed ones, keeping the file's start order.  A changed
  ``[endpoint]``/``[channels]`` restarts the endpoint subtree.  A child that
  cannot start is logged (``reload_child_failed``) and the node keeps running
  (a changed child falls back to its old spec); the next SIGHUP retries it.
  ``[logging]``, ``[pubsub]``, ``[history]``, ``[root]``, ``node.name`` and
  ``node.pid_file`` take effect on the next start (``reload_needs_restart``).

If the root supervisor gives up (max restart intensity), the daemon logs
``node_down`` and exits 1, so systemd or a container runtime restarts it.
If the tree cannot start at all (e.g. the port is taken) it logs
``node_start_failed`` and exits 1; if another daemon already answers on the
control socket it logs ``already_running`` and exits 2.
"""

from __future__ import annotations

import gc
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any, Awaitable, TextIO

import structlog
import trio

from .childspec import ChildSpec
from .channels.endpoint import Endpoint, EndpointSettings
from .channels.history import MemoryHistory
from .channels.pubsub import PubSub
from .config import ChildConfig, ConfigError, NodeConfig, SupervisorConfig, load_config
from .control import serve_control, socket_in_use
from .exits import Killed, StartError, reason_fields
from .node import Node, open_node
from .supervisor import SupervisorError, SupervisorRef

__all__ = ["Daemon", "child_spec_from_config", "endpoint_from_config", "root_children"]

log = structlog.get_logger("ackvisor.daemon")

EXIT_OK = 0
EXIT_NODE_DOWN = 1
EXIT_USAGE = 2


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
        write_timeout=ep.write_timeout,
        max_channels=ep.max_channels_per_socket,
        ack_timeout=ch.ack_timeout,
        on_no_ack=ch.on_no_ack,
        max_unacked=ch.max_unacked,
        max_unacked_bytes=ch.max_unacked_bytes,
    )
    return Endpoint({r.pattern: r.cls for r in ch.routes}, settings)


def root_children(config: NodeConfig, endpoint: Endpoint) -> list[ChildSpec]:
    """The root's children in start order: pubsub, the subtrees, the endpoint."""
    return [
        ChildSpec(
            "pubsub",
            PubSub,
            config.pubsub.adapter,
            config.pubsub.url,
            name="pubsub",
            kwargs=dict(node_id=config.node.name, history_size=config.history.size, history_max_age=config.history.max_age),
        ),
        *(child_spec_from_config(s) for s in config.subtrees),
        endpoint.child_spec(),
    ]


@dataclass
class _ReloadResult:
    started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


_LIVE_NODE_KEYS = ("shutdown_timeout", "drain_window")  # read when a drain starts: apply at once
_RESTART_ONLY = ("logging", "pubsub", "history", "root")  # what a reload cannot change in a running node


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
        self._reload_wanted = trio.Event()
        self._reload_scope = trio.CancelScope()
        self._stop_scope = trio.CancelScope()

    # ----- entry point

    async def serve(self) -> int:
        """Run until SIGTERM/SIGINT (exit 0) or until the root gives up (exit 1)."""
        config = self.config
        control_path = config.node.control_socket
        if socket_in_use(control_path):
            log.error("already_running", node=config.node.name, control_socket=str(control_path))
            return EXIT_USAGE
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
        # Process-wide, so set for the node's lifetime only (the daemon may run in-process in tests).
        gc_before = gc.get_threshold()
        gc.set_threshold(config.node.gc_threshold, *gc_before[1:])
        try:
            await self._run_node_with_gc_set()
        finally:
            gc.set_threshold(*gc_before)

    async def _run_node_with_gc_set(self) -> None:
        config = self.config
        async with open_node(config.node.name) as node:
            self.node = node
            node.history = MemoryHistory(config.history.size, config.history.max_age)  # type: ignore[attr-defined]
            self.endpoint = endpoint_from_config(config)
            try:
                self.root = await node.start_supervisor(
                    root_children(config, self.endpoint),
                    strategy=config.root.strategy,
                    max_restarts=config.root.max_restarts,
                    max_seconds=config.root.max_seconds,
                    name="root",
                )
            except StartError as e:
                # e.g. the port is taken or a child's init raises: the node cannot come up.
                log.error("node_start_failed", node=config.node.name, error=str(e))
                self._exit_code = EXIT_NODE_DOWN
                return
            try:
                self._write_pid()
            except OSError as e:
                log.error("node_start_failed", node=config.node.name, error=f"pid file {config.node.pid_file}: {e}")
                self._exit_code = EXIT_NODE_DOWN
                return
            try:
                async with trio.open_nursery() as nursery:
                    try:
                        await nursery.start(serve_control, config.node.control_socket, self._answer)
                    except OSError as e:  # e.g. a path longer than AF_UNIX allows, or no permission
                        log.error("node_start_failed", node=config.node.name, error=f"control socket {config.node.control_socket}: {e}")
                        self._exit_code = EXIT_NODE_DOWN
                        nursery.cancel_scope.cancel()
                        return
                    nursery.start_soon(self._watch_root)
                    nursery.start_soon(self._reloader)
                    print(f"ackvisor node {config.node.name!r} listening on {self.endpoint.url} (pid {os.getpid()})", file=self.out, flush=True)
                    log.info(
                        "node_started", node=config.node.name, url=self.endpoint.url, pid=os.getpid(),
                        gc_threshold=gc.get_threshold()[0],
                    )
                    await self._stopping.wait()
                    self._reload_scope.cancel()  # a reload in flight must not start children now
                    if self._exit_code == EXIT_OK:
                        with self._stop_scope:
                            await self._drain_and_stop()
                        log.info("node_stopped", node=self.config.node.name, forced=self._stop_scope.cancelled_caught)
                    nursery.cancel_scope.cancel()
            finally:
                self._remove_pid()

    # ----- signals

    async def _signal_loop(self, signals: Any) -> None:
        async for signum in signals:
            if signum == signal.SIGHUP:
                if not self._stopping.is_set():
                    self._reload_wanted.set()  # several HUPs during one reload: one more reload
                continue
            self._signals_seen += 1
            if self._signals_seen == 1:
                log.info("shutdown_requested", signal=signal.Signals(signum).name)
                self._stopping.set()
            else:
                log.warning("shutdown_forced", signal=signal.Signals(signum).name)
                self._stopping.set()
                self._stop_scope.cancel()  # the drain's sleeps and the ordered stop end now
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

    # ----- reload (SIGHUP)

    async def _reloader(self) -> None:
        with self._reload_scope:
            while True:
                await self._reload_wanted.wait()
                self._reload_wanted = trio.Event()
                await self.reload()

    async def reload(self) -> _ReloadResult | None:
        """Reload the config file; apply the difference or keep the old config if invalid.

        A child that cannot be (re)started is logged (``reload_child_failed``);
        a changed child whose new spec fails is started again with its old one.
        ``self.config`` becomes what actually runs, so the next reload retries
        whatever did not take.
        """
        try:
            new = load_config(self.config.path, overrides=self.overrides)
        except ConfigError as e:
            log.error("reload_failed", file=str(self.config.path), problems=[str(p) for p in e.problems])
            return None
        except OSError as e:
            log.error("reload_failed", file=str(self.config.path), problems=[str(e)])
            return None
        try:
            result, effective = await self._apply(self.config, new)
        except Exception as e:  # a bug must not take the node down with it
            log.exception("reload_failed", file=str(self.config.path), problems=[f"{type(e).__name__}: {e}"])
            return None
        self.config = effective
        log.info(
            "reload_applied",
            file=str(new.path),
            started=result.started,
            stopped=result.stopped,
            restarted=result.restarted,
            failed=result.failed,
        )
        return result

    async def _apply(self, old: NodeConfig, new: NodeConfig) -> tuple[_ReloadResult, NodeConfig]:
        root = self.root
        assert root is not None
        result = _ReloadResult()
        old_subtrees = {s.id: s for s in old.subtrees}
        new_subtrees = {s.id: s for s in new.subtrees}
        effective: list[SupervisorConfig] = []
        for sid, before in old_subtrees.items():
            if sid not in new_subtrees:
                if await self._attempt(result, sid, "stop", self._remove(root, sid)):
                    result.stopped.append(sid)
                else:
                    effective.append(before)
        for sid, sub in new_subtrees.items():
            before = old_subtrees.get(sid)
            if before is None:
                if await self._attempt(result, sid, "start", root.start_child(child_spec_from_config(sub))):
                    result.started.append(sid)
                    effective.append(sub)
            elif before != sub:
                running = await self._apply_subtree(root, before, sub, result, sid)
                if running is not None:
                    effective.append(running)
            else:
                effective.append(sub)
        endpoint_sections = (old.endpoint, old.channels)
        if endpoint_sections != (new.endpoint, new.channels):
            endpoint_sections = await self._replace_endpoint(root, old, new, result)
        order = [s.id for s in new.subtrees]
        effective.sort(key=lambda s: order.index(s.id) if s.id in order else len(order))
        assert self.endpoint is not None
        self._reorder(root, ["pubsub", *(s.id for s in effective), self.endpoint.id])

        needs_restart = [name for name in _RESTART_ONLY if getattr(old, name) != getattr(new, name)]
        if (old.node.name, old.node.pid_file) != (new.node.name, new.node.pid_file):
            needs_restart.insert(0, "node")
        if needs_restart:
            log.warning("reload_needs_restart", sections=needs_restart, hint="these take effect on the next start")
        node_section = replace(old.node, **{k: getattr(new.node, k) for k in _LIVE_NODE_KEYS})
        running = replace(
            new,
            node=node_section,
            endpoint=endpoint_sections[0],
            channels=endpoint_sections[1],
            subtrees=tuple(effective),
            **{name: getattr(old, name) for name in _RESTART_ONLY},
        )
        return result, running

    async def _replace_endpoint(self, root: SupervisorRef, old: NodeConfig, new: NodeConfig, result: _ReloadResult) -> tuple[Any, Any]:
        """Restart the endpoint subtree on the new settings; back on the old ones if it cannot start."""
        old_endpoint = self.endpoint
        assert old_endpoint is not None
        if not await self._attempt(result, old_endpoint.id, "stop", self._remove(root, old_endpoint.id)):
            return old.endpoint, old.channels
        endpoint = endpoint_from_config(new)
        if await self._attempt(result, endpoint.id, "start", root.start_child(endpoint.child_spec())):
            self.endpoint = endpoint
            result.restarted.append(endpoint.id)
            log.info("endpoint_reloaded", url=endpoint.url)
            return new.endpoint, new.channels
        fresh = endpoint_from_config(old)
        if await self._attempt(result, fresh.id, "start old", root.start_child(fresh.child_spec()), record=False):
            self.endpoint = fresh
        return old.endpoint, old.channels

    async def _apply_subtree(
        self, parent: SupervisorRef, old: SupervisorConfig, new: SupervisorConfig, result: _ReloadResult, path: str
    ) -> SupervisorConfig | None:
        """Apply a changed supervisor; returns the spec now running under its id (None: nothing)."""
        flags = ("strategy", "max_restarts", "max_seconds", "restart", "shutdown", "name")
        sup = self._child_ref(parent, new.id)
        if any(getattr(old, f) != getattr(new, f) for f in flags) or not isinstance(sup, SupervisorRef):
            return await self._replace_child(parent, old, new, result, path)
        old_children = {c.id: c for c in old.children}
        new_children = {c.id: c for c in new.children}
        running: list[ChildConfig | SupervisorConfig] = []
        for cid, before in old_children.items():
            if cid not in new_children:
                if await self._attempt(result, f"{path}/{cid}", "stop", self._remove(sup, cid)):
                    result.stopped.append(f"{path}/{cid}")
                else:
                    running.append(before)
        for cid, child in new_children.items():
            before = old_children.get(cid)
            child_path = f"{path}/{cid}"
            if before is None:
                if await self._attempt(result, child_path, "start", sup.start_child(child_spec_from_config(child))):
                    result.started.append(child_path)
                    running.append(child)
            elif before == child:
                running.append(child)
            elif isinstance(before, SupervisorConfig) and isinstance(child, SupervisorConfig):
                now = await self._apply_subtree(sup, before, child, result, child_path)
                if now is not None:
                    running.append(now)
            else:
                now = await self._replace_child(sup, before, child, result, child_path)
                if now is not None:
                    running.append(now)
        order = [c.id for c in new.children]
        running.sort(key=lambda c: order.index(c.id) if c.id in order else len(order))
        self._reorder(sup, [c.id for c in running])
        return replace(new, children=tuple(running))

    async def _replace_child(
        self,
        sup: SupervisorRef,
        old: ChildConfig | SupervisorConfig,
        new: ChildConfig | SupervisorConfig,
        result: _ReloadResult,
        path: str,
    ) -> ChildConfig | SupervisorConfig | None:
        """Stop a child and start it on its new spec (or, if that fails, on its old one again)."""
        if not await self._attempt(result, path, "stop", self._remove(sup, old.id)):
            return old
        if await self._attempt(result, path, "start", sup.start_child(child_spec_from_config(new))):
            result.restarted.append(path)
            return new
        if await self._attempt(result, path, "start old", sup.start_child(child_spec_from_config(old)), record=False):
            log.warning("reload_rolled_back", child=path)
            return old
        return None

    @staticmethod
    async def _attempt(result: _ReloadResult, path: str, action: str, step: Awaitable[Any], *, record: bool = True) -> bool:
        try:
            await step
        except Exception as e:  # noqa: BLE001 - any failure of one step is logged, the others go on
            log.error("reload_child_failed", child=path, action=action, error=f"{type(e).__name__}: {e}")
            if record and path not in result.failed:
                result.failed.append(path)
            return False
        return True

    @staticmethod
    def _reorder(sup: SupervisorRef, order: list[str]) -> None:
        """Put the children back in the config's start order.

        ``start_child`` appends, so a restarted or added child would otherwise
        end up last, changing what ``rest_for_one`` restarts and the reverse
        order of shutdown.  The runtime has no public way to position a child:
        this sorts the supervisor's own list (no await: nothing interleaves).
        """
        children = getattr(sup._sup, "_children", None)
        if not isinstance(children, list):
            return
        rank = {cid: i for i, cid in enumerate(order)}
        children.sort(key=lambda c: rank.get(c.spec.id, len(rank)))

    @staticmethod
    def _child_ref(sup: SupervisorRef, child_id: str) -> Any:
        for info in sup.which_children():
            if info.id == child_id:
                return info.ref
        return None

    @staticmethod
    async def _remove(sup: SupervisorRef, child_id: str) -> None:
        """Stop a child and forget its spec; a child that is already gone counts as removed."""
        try:
            await sup.terminate_child(child_id)
            await sup.delete_child(child_id)
        except SupervisorError as e:
            if e.what != "not_found":  # temporary children are gone once terminated
                raise

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
