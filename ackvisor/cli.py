"""The ``ackvisor`` command: ``run``, ``check``, ``tree``, ``version``.

Exit codes: 0 success; 1 the node went down (root supervisor gave up) or the
daemon could not be reached; 2 invalid usage or an invalid config.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import trio

from . import __version__

__all__ = ["main", "render_tree"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ackvisor", description="Supervised actors on Trio with a Phoenix Channels endpoint.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon until SIGTERM/SIGINT")
    run.add_argument("--config", default="config.toml", help="node config file (default: config.toml)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. channels.ack_timeout=1.5s (repeatable)")
    run.add_argument("--log-format", choices=("auto", "console", "json"), default=None, help="default: [logging] format")
    run.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default=None, help="default: [logging] level")

    check = sub.add_parser("check", help="validate a config (and import every target) without starting anything")
    check.add_argument("--config", default="config.toml")
    check.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    tree = sub.add_parser("tree", help="print the live supervision tree of a running daemon")
    tree.add_argument("--config", default="config.toml", help="the daemon's config (to find its control socket)")
    tree.add_argument("--socket", default=None, help="the control socket path (instead of --config)")
    tree.add_argument("--json", action="store_true", help="print JSON")

    sub.add_parser("version", help="print the version")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ackvisor`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(f"ackvisor {__version__}")
        return 0
    if args.command == "check":
        return _check(args)
    if args.command == "run":
        return _run(args)
    if args.command == "tree":
        return _tree(args)
    return 2  # pragma: no cover - argparse enforces the choices


def _load(path: str, overrides: Sequence[str], *, import_targets: bool = True) -> Any:
    from .config import ConfigError, load_config

    try:
        config = load_config(path, overrides=tuple(overrides), import_targets=import_targets)
        _check_control_socket(config, overrides)
        return config
    except ConfigError as e:
        n = len(e.problems)
        print(f"ackvisor: {path}: {n} problem{'s' if n != 1 else ''}:", file=sys.stderr)
        for problem in e.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


_MAX_UNIX_PATH = 107  # sockaddr_un.sun_path is 108 bytes on Linux (104 on macOS), NUL included


def _check_control_socket(config: Any, overrides: Sequence[str]) -> None:
    """The control socket lives beside the pid file: its path must fit a unix socket address."""
    from .config import ConfigError, ConfigProblem

    sock = config.node.control_socket
    limit = _MAX_UNIX_PATH if sys.platform.startswith("linux") else 103
    if len(os.fsencode(str(sock))) <= limit:
        return
    from_set = any(o.replace(" ", "").startswith("node.pid_file=") for o in overrides)
    raise ConfigError(
        [
            ConfigProblem(
                file="--set" if from_set else str(config.path),
                key="node.pid_file",
                line=None,
                found=str(config.node.pid_file),
                expected=f"a pid file whose control socket path ({sock.name} beside it) is at most {limit} bytes long "
                f"(a unix socket address limit; this one is {len(os.fsencode(str(sock)))})",
            )
        ]
    )


def _check(args: argparse.Namespace) -> int:
    config = _load(args.config, args.overrides)
    if config is None:
        return 2
    subtrees = ", ".join(s.id for s in config.subtrees) or "none"
    routes = ", ".join(f"{r.pattern} -> {r.target}" for r in config.channels.routes) or "none"
    print(f"{args.config}: ok (node {config.node.name}; subtrees: {subtrees}; routes: {routes})")
    return 0


def _run(args: argparse.Namespace) -> int:
    from .daemon import Daemon
    from .log import configure_logging

    config = _load(args.config, args.overrides)
    if config is None:
        return 2
    configure_logging(args.log_format or config.logging.format, args.log_level or config.logging.level)
    daemon = Daemon(config, overrides=tuple(args.overrides))
    try:
        return trio.run(daemon.serve)
    except OSError as e:
        print(f"ackvisor: cannot start: {e}", file=sys.stderr)
        return 1


def _tree(args: argparse.Namespace) -> int:
    from .control import ControlError, request_control

    if args.socket is not None:
        path = Path(args.socket)
    else:
        config = _load(args.config, (), import_targets=False)
        if config is None:
            return 2
        path = config.node.control_socket
    try:
        answer = trio.run(request_control, path)
    except ControlError as e:
        print(f"ackvisor: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(render_tree(answer))
    return 0


def render_tree(answer: dict[str, Any]) -> str:
    """Text rendering of a ``tree`` answer; children of a dynamic supervisor with one id are folded."""
    lines = [f"node {answer.get('node')} (pid {answer.get('pid')}, {answer.get('actors')} actors) {answer.get('url') or ''}".rstrip()]

    def describe(entry: dict[str, Any]) -> str:
        kind = entry.get("kind", "?")
        if entry.get("strategy"):
            kind += f", {entry['strategy']}"
        text = f"{entry.get('id')} ({kind}) {entry.get('state')} restarts={entry.get('restarts', 0)}"
        if entry.get("mailbox_depth"):
            text += f" mailbox={entry['mailbox_depth']}"
        if entry.get("last_exit"):
            text += f" last_exit={entry['last_exit']}"
        return text

    def walk(children: list[dict[str, Any]], prefix: str) -> None:
        folded: list[tuple[dict[str, Any], int]] = []
        for child in children:
            if folded and folded[-1][0].get("id") == child.get("id") and not child.get("children"):
                folded[-1] = (folded[-1][0], folded[-1][1] + 1)
            else:
                folded.append((child, 1))
        for i, (child, count) in enumerate(folded):
            last = i == len(folded) - 1
            branch = "└── " if last else "├── "
            label = describe(child) if count == 1 else f"{child.get('id')} × {count} ({child.get('kind')})"
            lines.append(prefix + branch + label)
            if child.get("children"):
                walk(child["children"], prefix + ("    " if last else "│   "))

    walk(answer.get("tree", []), "")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
