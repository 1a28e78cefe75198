"""Resume benchmark: replaying a topic's history to a client that comes back after a crash.

Run: ``.venv/bin/python bench/resume.py [--quick]`` (under 60 s; ``--quick`` about 10 s).
Prints ONE JSON line on stdout (progress goes to stderr).

The server (a node with pubsub and an endpoint on 127.0.0.1, ``ack_timeout`` 5 s, the
default ``max_unacked`` 1000, so the replay window is 500 unacked pushes) runs in this
process; every client is a *separate process* (this file in ``--role client`` mode, a
trio-websocket client that checks every offset is the next one), so client CPU is not
counted as server time.  The channel is the common pattern: ``history_topic = "feed"``
and ``handle_out`` pushes each message with an ack.

Phases:

* ``memory`` - ``MemoryHistory.append`` of 50,000 messages, measured with tracemalloc:
  bytes per message held by the history itself (payloads built beforehand: the Entry,
  its slot in the log) and including a small ``{"n": i}`` payload built per message.
* ``replay`` - 50,000 messages in the history; a client joins with
  ``resume: {epoch, offset: 0}`` and reads until it has all 50,000 (each one the next
  offset).  Messages/s from the join sent to the last message received, with per-message
  acks (``message_id``, what ``ackvisor.client`` and phoenix.js send) and with a
  cumulative ack every 64 messages (best of 2 runs each); also the server's CPU time per
  replayed message (this process's rusage: the client is another process).
* ``catch_up`` - 1,000 messages published while the client was away: a fresh process
  opens a new WebSocket (TCP + WebSocket handshake), joins with ``resume`` and reads the
  1,000 missed messages.  Time from starting to connect to the 1,000th message (and to the
  join reply), per-message acks; median, p90 and max of the runs.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from typing import Any

HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- client role


async def client_main(cfg: dict[str, Any]) -> dict[str, Any]:
    import trio
    from trio_websocket import open_websocket_url

    topic, n, ack = cfg["topic"], cfg["n"], cfg["ack"]
    last = cfg["offset"]
    t0 = time.perf_counter()
    t_joined = None
    async with open_websocket_url(cfg["url"], max_message_size=1 << 24) as ws:
        t_open = time.perf_counter()
        await ws.send_message(json.dumps(["1", "1", topic, "phx_join", {"resume": {"epoch": cfg["epoch"], "offset": last}}]))
        got = 0
        with trio.fail_after(60):
            while got < n:
                frame = json.loads(await ws.get_message())
                event = frame[3]
                if event == "phx_reply":
                    if frame[1] == "1":
                        t_joined = time.perf_counter()
                        if not frame[4]["response"].get("recovered"):
                            raise SystemExit(f"not recovered: {frame}")
                    continue
                if event != "tick":
                    raise SystemExit(f"unexpected frame {frame}")
                payload = frame[4]
                offset = payload["offset"]
                if offset != last + 1:
                    raise SystemExit(f"offset {offset} after {last}")
                last = offset
                got += 1
                if ack == "each":
                    await ws.send_message(json.dumps(["1", None, topic, "message_ack", {"message_id": payload["message_id"]}]))
                elif got % 64 == 0 or got == n:
                    await ws.send_message(json.dumps(["1", None, topic, "message_ack", {"offset": offset}]))
        t_end = time.perf_counter()
    return {
        "connect_s": t_open - t0,
        "joined_s": (t_joined or t_end) - t0,
        "total_s": t_end - t0,
        "from_join_s": t_end - t_open,
        "received": got,
        "last_offset": last,
    }


# ----------------------------------------------------------------------------- server role


def memory_phase(n: int) -> dict[str, Any]:
    import trio

    from ackvisor.channels.history import MemoryHistory

    result: dict[str, Any] = {}

    async def measure() -> None:
        payloads = [{"n": i} for i in range(n)]
        history = MemoryHistory(size=n, max_age=3600)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for p in payloads:
            history.append("feed", "tick", p)
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        result["bytes_per_message_excl_payload"] = round((after - before) / n, 1)
        del history, payloads

        history = MemoryHistory(size=n, max_age=3600)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            history.append("feed", "tick", {"n": i})
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        result["bytes_per_message_with_small_payload"] = round((after - before) / n, 1)

    trio.run(measure)
    result["messages"] = n
    return result


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_client(cfg: dict[str, Any]) -> dict[str, Any]:
    import trio

    proc = await trio.run_process(
        [sys.executable, HERE, "--role", "client", json.dumps(cfg)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"client failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


async def server_phases(replay_n: int, catch_up_n: int, catch_up_runs: int) -> dict[str, Any]:
    import structlog

    from ackvisor import ChildSpec, open_node
    from ackvisor.channels import Channel, Endpoint, PubSub, Socket, pubsub
    from ackvisor.channels.history import MemoryHistory

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))

    class FeedChannel(Channel):
        history_topic = "feed"

        async def handle_out(self, event: str, payload: Any, socket: Socket) -> Any:
            await self.push(event, payload, ack=True)

    out: dict[str, Any] = {}
    async with open_node("bench") as node:
        node.history = MemoryHistory(size=max(replay_n, 10_000), max_age=3600)  # type: ignore[attr-defined]
        endpoint = Endpoint({"feed:*": FeedChannel}, port=0, host="127.0.0.1", ack_timeout=5.0)
        await node.start_supervisor([ChildSpec("pubsub", PubSub, name="pubsub"), endpoint.child_spec()])
        await endpoint.wait_listening()
        url = f"ws://127.0.0.1:{endpoint.port}/socket/websocket?vsn=2.0.0"
        history = node.history  # type: ignore[attr-defined]

        for i in range(replay_n):
            pubsub.publish(node, "feed", "tick", {"n": i, "body": "x" * 40})
        epoch = history.position("feed").epoch

        replay: dict[str, Any] = {"messages": replay_n}
        for ack in ("each", "cumulative"):
            best = None
            for _ in range(2):
                cpu0 = cpu_seconds()
                r = await run_client({"url": url, "topic": "feed:r", "epoch": epoch, "offset": 0, "n": replay_n, "ack": ack})
                cpu = cpu_seconds() - cpu0
                assert r["received"] == replay_n and r["last_offset"] == replay_n, r
                rate = replay_n / r["from_join_s"]
                if best is None or rate > best[0]:
                    best = (rate, cpu)
            assert best is not None
            replay[f"msgs_per_s_ack_{ack}"] = round(best[0])
            replay[f"server_cpu_us_per_msg_ack_{ack}"] = round(best[1] / replay_n * 1e6, 1)
            log(f"replay ack={ack}: {best[0]:.0f} msg/s")
        out["replay"] = replay

        totals, joins = [], []
        for _ in range(catch_up_runs):
            start = history.position("feed").offset
            for i in range(catch_up_n):
                pubsub.publish(node, "feed", "tick", {"n": i, "body": "x" * 40})
            r = await run_client({"url": url, "topic": "feed:c", "epoch": epoch, "offset": start, "n": catch_up_n, "ack": "each"})
            assert r["received"] == catch_up_n and r["last_offset"] == start + catch_up_n, r
            totals.append(r["total_s"] * 1000)
            joins.append(r["joined_s"] * 1000)
        totals.sort()
        out["catch_up"] = {
            "missed": catch_up_n,
            "runs": catch_up_runs,
            "reconnect_to_caught_up_ms_median": round(statistics.median(totals), 1),
            "reconnect_to_caught_up_ms_p90": round(totals[min(len(totals) - 1, int(0.9 * len(totals)))], 1),
            "reconnect_to_caught_up_ms_max": round(totals[-1], 1),
            "reconnect_to_join_reply_ms_median": round(statistics.median(joins), 1),
        }
        log(f"catch-up {catch_up_n}: median {statistics.median(totals):.1f} ms")
    return out


def main() -> None:
    args = sys.argv[1:]
    if args[:2] == ["--role", "client"]:
        import trio

        print(json.dumps(trio.run(client_main, json.loads(args[2]))))
        return
    quick = "--quick" in args
    import trio

    t0 = time.perf_counter()
    result: dict[str, Any] = {"bench": "resume", "quick": quick}
    result["memory"] = memory_phase(10_000 if quick else 50_000)
    log(f"memory: {result['memory']}")
    result.update(trio.run(server_phases, 10_000 if quick else 50_000, 1_000, 5 if quick else 15))
    result["python"] = sys.version.split()[0]
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
