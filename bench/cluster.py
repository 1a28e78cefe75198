"""Cluster benchmark: the Redis broker (2 nodes) against a raw coredis publish->subscribe loop.

Run: ``.venv/bin/python bench/cluster.py [--url redis://127.0.0.1:6379/0] [--quick]``
(about 30-60 s; ``--quick`` about 10 s).  Prints ONE JSON line.  Needs a
redis-server; uses a unique key prefix and deletes its own keys at the end.

Everything runs in ONE Python process (one core for all the Python; the
other core is left to redis-server on a 2-core box), for the broker and for
the baseline alike, so the ratios compare like with like.  Real nodes are
separate processes and would each get their own core.

Both nodes are subscribed to the topic (the publishing node gets its own
messages back from Redis: no local short-circuit), so the baseline has two
subscriber clients too, each decoding every JSON body.

* ``latency`` - one message in flight: node A ``await publish(...)`` then
  waits until node B's deliver callback has it; publish call to delivery on
  B, p50/p99 in µs.  Baseline: coredis ``await client.publish(ch, data)``
  until the second subscriber's ``get_message()`` loop has it.
* ``throughput`` - 16 publisher tasks on node A send ``N`` messages in total
  (``await publish``, batched by the node's publisher task into pipelined
  Lua calls); messages/s from the first send until both nodes delivered the
  last (node B's offsets checked to be in order, no gap).  Baseline: 16
  tasks doing ``await client.publish`` (coredis multiplexes them on one
  connection) until both subscribers got the last one.  The broker does
  strictly more per message (offset, stream append, idempotency key,
  envelope, feed sequencing).
* ``fanout`` - 5,000 subscriber actors, 2,500 on each of 2 ackvisor nodes
  (``open_node`` + a broker each), subscribed to one topic through the local
  pubsub registry; each node's deliver callback puts a
  :class:`~ackvisor.channels.pubsub.Broadcast` in every local subscriber's
  mailbox (the intended integration).  Time from the publish call on node A
  until all 5,000 actors handled it; best and median of several rounds.

Each figure is the best of a few repetitions (less noise from a busy machine).
"""

from __future__ import annotations

import json
import platform
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import coredis  # noqa: E402
import structlog  # noqa: E402
import trio  # noqa: E402

from ackvisor import Actor, open_node  # noqa: E402
from ackvisor.brokers import Publication, RedisBroker  # noqa: E402
from ackvisor.channels import pubsub  # noqa: E402
from ackvisor.channels.pubsub import Broadcast  # noqa: E402

QUICK = "--quick" in sys.argv
URL = sys.argv[sys.argv.index("--url") + 1] if "--url" in sys.argv else "redis://127.0.0.1:6379/0"
REPEAT = 1 if QUICK else 3
N_LAT = 500 if QUICK else 2000
N_TPUT = 5000 if QUICK else 20000
PUBLISHERS = 16
N_FANOUT = 5000
FANOUT_ROUNDS = 3 if QUICK else 7
PAYLOAD = {"body": "x" * 64, "n": 0}


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


async def delete_prefix(prefix: str) -> None:
    client = coredis.Redis.from_url(URL)
    async with client:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(keys), 500):
            await client.delete(keys[i : i + 500])


# ------------------------------------------------------------------ raw coredis baseline


class Tally:
    """Counts deliveries on one 'node'; ``wait(n)`` until it has n."""

    def __init__(self) -> None:
        self.n = 0
        self.target = 0
        self.event = trio.Event()

    def hit(self) -> None:
        self.n += 1
        if self.n >= self.target:
            self.event.set()

    async def wait(self, target: int) -> None:
        self.target = target
        if self.n < target:
            await self.event.wait()
        self.event = trio.Event()


async def raw_phase() -> dict[str, float]:
    """Two subscriber clients (one per 'node', like the broker run), one publisher client."""
    channel = f"axbench-raw-{secrets.token_hex(4)}"
    pub = coredis.Redis.from_url(URL)
    subs = [coredis.Redis.from_url(URL), coredis.Redis.from_url(URL)]
    tallies = [Tally(), Tally()]
    out: dict[str, float] = {}

    async def drain(ps: Any, tally: Tally) -> None:
        while True:
            m = await ps.get_message()
            if m is not None and m["type"] == "message":
                json.loads(m["data"])  # the broker decodes every body too
                tally.hit()

    async with pub, subs[0], subs[1]:
        async with subs[0].pubsub(channels=[channel], ignore_subscribe_messages=True) as ps0:
            async with subs[1].pubsub(channels=[channel], ignore_subscribe_messages=True) as ps1:
                async with trio.open_nursery() as bg:
                    bg.start_soon(drain, ps0, tallies[0])
                    bg.start_soon(drain, ps1, tallies[1])
                    # latency: one in flight, until the other node's subscriber has it
                    samples = []
                    for i in range(N_LAT):
                        t0 = time.perf_counter()
                        await pub.publish(channel, json.dumps({**PAYLOAD, "n": i}))
                        await tallies[1].wait(tallies[1].n + 1)
                        samples.append((time.perf_counter() - t0) * 1e6)
                    out["p50"], out["p99"] = pct(samples, 50), pct(samples, 99)
                    await tallies[0].wait(N_LAT)

                    # throughput: 16 concurrent publishers, until both subscribers have all
                    best = 0.0
                    for _ in range(REPEAT):
                        base = [t.n for t in tallies]
                        t0 = time.perf_counter()

                        async def publisher(k: int) -> None:
                            for i in range(k, N_TPUT, PUBLISHERS):
                                await pub.publish(channel, json.dumps({**PAYLOAD, "n": i}))

                        async with trio.open_nursery() as n:
                            for k in range(PUBLISHERS):
                                n.start_soon(publisher, k)
                            for t, b0 in zip(tallies, base):
                                await t.wait(b0 + N_TPUT)
                        best = max(best, N_TPUT / (time.perf_counter() - t0))
                    out["tput"] = best
                    bg.cancel_scope.cancel()
    return out


# ------------------------------------------------------------------ broker, 2 nodes


async def broker_phase() -> dict[str, Any]:
    prefix = "axbench" + secrets.token_hex(4)
    tallies = [Tally(), Tally()]
    offsets: list[int] = []

    def on_b(p: Publication) -> None:
        offsets.append(p.offset)
        tallies[1].hit()

    a = RedisBroker(URL, node_id="bench-a", prefix=prefix, max_queue=N_TPUT + 1000)
    b = RedisBroker(URL, node_id="bench-b", prefix=prefix)
    out: dict[str, Any] = {}
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: a.run(lambda p: tallies[0].hit(), task_status=task_status))
            await nursery.start(lambda task_status: b.run(on_b, task_status=task_status))
            for br in (a, b):  # both nodes have subscribers (the publisher's node gets it back too)
                br.subscribe("bench")
                await br.ensure_subscribed("bench")
            await a.publish("bench", "warm", PAYLOAD)  # scripts loaded, connections up
            for t in tallies:
                await t.wait(1)

            samples = []
            for i in range(N_LAT):
                t0 = time.perf_counter()
                await a.publish("bench", "m", {**PAYLOAD, "n": i})
                await tallies[1].wait(i + 2)  # the warm-up message, then 0..i
                samples.append((time.perf_counter() - t0) * 1e6)
            out["p50"], out["p99"] = pct(samples, 50), pct(samples, 99)
            await tallies[0].wait(N_LAT + 1)

            best, ordered = 0.0, True
            for _ in range(REPEAT):
                base = [t.n for t in tallies]
                offsets.clear()
                t0 = time.perf_counter()

                async def publisher(k: int) -> None:
                    for i in range(k, N_TPUT, PUBLISHERS):
                        await a.publish("bench", "m", {**PAYLOAD, "n": i})

                async with trio.open_nursery() as n:
                    for k in range(PUBLISHERS):
                        n.start_soon(publisher, k)
                    for t, b0 in zip(tallies, base):
                        await t.wait(b0 + N_TPUT)
                best = max(best, N_TPUT / (time.perf_counter() - t0))
                ordered = ordered and offsets == list(range(offsets[0], offsets[0] + N_TPUT))
            out["tput"] = best
            out["ordered"] = ordered
            s = a.statistics()
            out["avg_batch"] = round(s.published / max(1, s.publish_batches), 1)
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await delete_prefix(prefix)
    return out


# ------------------------------------------------------------------ fan-out to 5,000 actors


class Counter:
    def __init__(self) -> None:
        self.n = 0
        self.target = 0
        self.done = trio.Event()

    def hit(self) -> None:
        self.n += 1
        if self.n >= self.target:
            self.done.set()


class Subscriber(Actor):
    async def init(self, counter: Counter) -> None:
        self.counter = counter

    async def handle_info(self, message: Any) -> None:
        if type(message) is Broadcast:
            self.counter.hit()


def local_fanout(node: Any) -> Any:
    def deliver(p: Publication) -> None:
        message = Broadcast(p.topic, p.event, p.payload, None, p.offset, p.epoch)
        for ref in pubsub.subscribers(node, p.topic):
            ref.send(message)

    return deliver


async def fanout_phase() -> dict[str, Any]:
    prefix = "axbench" + secrets.token_hex(4)
    counter = Counter()
    brokers: list[RedisBroker] = []
    times: list[float] = []
    try:
        async with open_node("bench-a") as node_a, open_node("bench-b") as node_b:
            async with trio.open_nursery() as nursery:
                for i, node in enumerate((node_a, node_b)):
                    br = RedisBroker(URL, node_id=f"fan-{i}", prefix=prefix)
                    brokers.append(br)
                    await nursery.start(lambda task_status, br=br, node=node: br.run(local_fanout(node), task_status=task_status))
                    br.subscribe("fan")
                    await br.ensure_subscribed("fan")
                    for _ in range(N_FANOUT // 2):
                        ref = await node.spawn(Subscriber, counter)
                        pubsub.subscribe(node, "fan", ref)
                await trio.sleep(0.2)
                for r in range(FANOUT_ROUNDS + 1):
                    counter.target = counter.n + N_FANOUT
                    counter.done = trio.Event()
                    t0 = time.perf_counter()
                    await brokers[0].publish("fan", "tick", {"round": r})
                    await counter.done.wait()
                    if r:  # the first round warms up
                        times.append((time.perf_counter() - t0) * 1e3)
                    await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await delete_prefix(prefix)
    return {"best_ms": min(times), "median_ms": statistics.median(times), "rounds": len(times)}


async def main() -> None:
    t_start = time.perf_counter()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only
    raw = await raw_phase()
    br = await broker_phase()
    fan = await fanout_phase()
    redis_version = "?"
    async with coredis.Redis.from_url(URL) as c:
        redis_version = (await c.info("server")).get("redis_version", "?")
    out = {
        "bench": "ackvisor.cluster",
        "python": platform.python_version(),
        "trio": trio.__version__,
        "coredis": coredis.__version__,
        "redis": redis_version,
        "nodes": 2,
        "same_process": True,
        "latency_p50_us": round(br["p50"]),
        "latency_p99_us": round(br["p99"]),
        "raw_latency_p50_us": round(raw["p50"]),
        "raw_latency_p99_us": round(raw["p99"]),
        "latency_p50_ratio": round(br["p50"] / raw["p50"], 2),
        "throughput_msgs_per_s": round(br["tput"]),
        "raw_throughput_msgs_per_s": round(raw["tput"]),
        "throughput_ratio": round(br["tput"] / raw["tput"], 2),
        "throughput_in_order": br["ordered"],
        "publish_avg_batch": br["avg_batch"],
        "publishers": PUBLISHERS,
        "messages": N_TPUT,
        "fanout_subscribers": N_FANOUT,
        "fanout_best_ms": round(fan["best_ms"], 1),
        "fanout_median_ms": round(fan["median_ms"], 1),
        "fanout_rounds": fan["rounds"],
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    trio.run(main)
