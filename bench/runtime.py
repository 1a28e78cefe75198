"""Runtime benchmark: ackvisor actors against raw Trio baselines measured in the same run.

Run: ``.venv/bin/python bench/runtime.py`` (add ``--quick`` for a smoke run).
Prints ONE JSON line.  Each figure is the best of a few repetitions (less
noise from a busy machine); each section is bounded to a few seconds.

* ``cast``: messages/s through ``ActorRef.cast`` into an actor's
  ``handle_cast``, vs a raw unbounded memory channel (``send_nowait`` producer,
  ``receive`` consumer).  The producer checkpoints every 100 messages in both.
* ``call``: round trips/s of ``await ref.call(x)``, vs raw ping-pong over two
  memory channels (``send_nowait`` + ``await receive()`` on both sides).
* ``spawn``: ``node.spawn`` + ``ref.stop`` of 10,000 actors (actors/s), vs
  ``nursery.start`` of a bare task owning a channel + cancelling it; memory
  per idle actor (KB, tracemalloc) vs the bare task + channel.
* ``restart``: crash of a permanent child to its replacement being ready
  (``init`` returned), under a one_for_one supervisor; p50/p99 in µs.
"""

from __future__ import annotations

import gc
import json
import math
import platform
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import structlog  # noqa: E402
import trio  # noqa: E402
import trio.testing  # noqa: E402

from ackvisor import Actor, ChildSpec, open_node  # noqa: E402

QUICK = "--quick" in sys.argv
REPEAT = 1 if QUICK else 3
N_CAST = 20_000 if QUICK else 200_000
N_CALL = 5_000 if QUICK else 50_000
N_SPAWN = 1_000 if QUICK else 10_000
N_IDLE = 2_000 if QUICK else 10_000
N_RESTART = 300 if QUICK else 3_000
BATCH = 100


def best(fn, repeat=REPEAT):
    return max(fn() for _ in range(repeat))


# ------------------------------------------------------------------ cast


def raw_cast() -> float:
    async def main() -> float:
        send, recv = trio.open_memory_channel(math.inf)
        done = trio.Event()

        async def consumer() -> None:
            n = 0
            while True:
                await recv.receive()
                n += 1
                if n == N_CAST:
                    done.set()
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            await trio.testing.wait_all_tasks_blocked()
            t0 = time.perf_counter()
            for i in range(N_CAST):
                send.send_nowait(i)
                if i % BATCH == 0:
                    await trio.lowlevel.checkpoint()
            await done.wait()
            return N_CAST / (time.perf_counter() - t0)

    return trio.run(main)


class Sink(Actor):
    async def init(self, n: int, done: trio.Event) -> None:
        self.n = n
        self.count = 0
        self.done = done

    async def handle_cast(self, request) -> None:
        self.count += 1
        if self.count == self.n:
            self.done.set()


def actor_cast() -> float:
    async def main() -> float:
        async with open_node() as node:
            done = trio.Event()
            ref = await node.spawn(Sink, N_CAST, done)
            await trio.testing.wait_all_tasks_blocked()
            t0 = time.perf_counter()
            cast = ref.cast
            for i in range(N_CAST):
                cast(i)
                if i % BATCH == 0:
                    await trio.lowlevel.checkpoint()
            await done.wait()
            return N_CAST / (time.perf_counter() - t0)

    return trio.run(main)


# ------------------------------------------------------------------ call


def raw_call() -> float:
    async def main() -> float:
        req_send, req_recv = trio.open_memory_channel(math.inf)
        rep_send, rep_recv = trio.open_memory_channel(math.inf)

        async def server() -> None:
            while True:
                x = await req_recv.receive()
                rep_send.send_nowait(x)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(server)
            await trio.testing.wait_all_tasks_blocked()
            t0 = time.perf_counter()
            for i in range(N_CALL):
                req_send.send_nowait(i)
                await rep_recv.receive()
            rate = N_CALL / (time.perf_counter() - t0)
            nursery.cancel_scope.cancel()
            return rate

    return trio.run(main)


class Echo(Actor):
    async def handle_call(self, request, caller):
        return request


def actor_call() -> float:
    async def main() -> float:
        async with open_node() as node:
            ref = await node.spawn(Echo)
            await trio.testing.wait_all_tasks_blocked()
            call = ref.call
            t0 = time.perf_counter()
            for i in range(N_CALL):
                await call(i)
            return N_CALL / (time.perf_counter() - t0)

    return trio.run(main)


# ---------------------------------------------------------- spawn / memory


class Idle(Actor):
    pass


async def _bare(task_status=trio.TASK_STATUS_IGNORED) -> None:
    send, recv = trio.open_memory_channel(math.inf)
    task_status.started(send)
    async for _ in recv:
        pass


def raw_spawn() -> float:
    async def main() -> float:
        async with trio.open_nursery() as nursery:
            t0 = time.perf_counter()
            sends = []
            for _ in range(N_SPAWN):
                sends.append(await nursery.start(_bare))
            for s in sends:
                s.close()
            await trio.testing.wait_all_tasks_blocked()
            return N_SPAWN / (time.perf_counter() - t0)

    return trio.run(main)


def actor_spawn() -> float:
    async def main() -> float:
        async with open_node() as node:
            t0 = time.perf_counter()
            refs = [await node.spawn(Idle) for _ in range(N_SPAWN)]
            for ref in refs:
                await ref.stop()
            rate = N_SPAWN / (time.perf_counter() - t0)
            pass
            return rate

    return trio.run(main)


def _measure_memory(start_many) -> float:
    async def main() -> float:
        async with trio.open_nursery() as nursery:
            await start_many(nursery, 10)  # warm caches
            await trio.testing.wait_all_tasks_blocked()
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.take_snapshot()
            keep = await start_many(nursery, N_IDLE)
            await trio.testing.wait_all_tasks_blocked()
            gc.collect()
            after = tracemalloc.take_snapshot()
            tracemalloc.stop()
            used = sum(s.size_diff for s in after.compare_to(before, "filename"))
            del keep
            nursery.cancel_scope.cancel()
            return used / N_IDLE / 1024

    return trio.run(main)


def raw_memory() -> float:
    async def start_many(nursery, n):
        return [await nursery.start(_bare) for _ in range(n)]

    return _measure_memory(start_many)


def actor_memory() -> float:
    async def main() -> float:
        async with open_node() as node:
            async def spawn_many(_nursery, n):
                return [await node.spawn(Idle) for _ in range(n)]

            await spawn_many(None, 10)
            await trio.testing.wait_all_tasks_blocked()
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.take_snapshot()
            keep = await spawn_many(None, N_IDLE)
            await trio.testing.wait_all_tasks_blocked()
            gc.collect()
            after = tracemalloc.take_snapshot()
            tracemalloc.stop()
            used = sum(s.size_diff for s in after.compare_to(before, "filename"))
            del keep
            for cell in list(node._cells.values()):
                cell.kill()
            pass
            return used / N_IDLE / 1024

    return trio.run(main)


# ---------------------------------------------------------------- restart

_ready: list[float] = []
_crashed: list[float] = []


class Crasher(Actor):
    async def init(self) -> None:
        _ready.append(time.perf_counter())

    async def handle_cast(self, request) -> None:
        _crashed.append(time.perf_counter())
        raise RuntimeError("boom")


def restart_latency() -> tuple[float, float]:
    async def main() -> tuple[float, float]:
        async with open_node() as node:
            sup = await node.start_supervisor(
                [ChildSpec("c", Crasher)], max_restarts=10**9, max_seconds=1
            )
            lat = []
            for _ in range(N_RESTART):
                ref = sup.which_children()[0].ref
                _ready.clear()
                _crashed.clear()
                ref.cast("crash")
                await trio.testing.wait_all_tasks_blocked()
                lat.append((_ready[0] - _crashed[0]) * 1e6)
            lat.sort()
            return statistics.median(lat), lat[int(len(lat) * 0.99) - 1]

    return trio.run(main)


def main() -> None:
    # Reports are part of the work, but rendering them to a terminal is not: drop them.
    structlog.configure(processors=[lambda *_: (_ for _ in ()).throw(structlog.DropEvent())])
    t_start = time.perf_counter()
    raw_c, act_c = best(raw_cast), best(actor_cast)
    raw_k, act_k = best(raw_call), best(actor_call)
    raw_s, act_s = best(raw_spawn), best(actor_spawn)
    raw_m, act_m = min(raw_memory() for _ in range(1)), min(actor_memory() for _ in range(1))
    p50, p99 = min(restart_latency() for _ in range(REPEAT))
    out = {
        "bench": "ackvisor.runtime",
        "python": platform.python_version(),
        "trio": trio.__version__,
        "cast_msgs_per_s": round(act_c),
        "cast_raw_msgs_per_s": round(raw_c),
        "cast_ratio": round(act_c / raw_c, 3),
        "call_rt_per_s": round(act_k),
        "call_raw_rt_per_s": round(raw_k),
        "call_ratio": round(act_k / raw_k, 3),
        "spawn_stop_actors_per_s": round(act_s),
        "spawn_stop_raw_per_s": round(raw_s),
        "spawn_ratio": round(act_s / raw_s, 3),
        "idle_actor_kb": round(act_m, 2),
        "idle_raw_task_kb": round(raw_m, 2),
        "idle_ratio": round(act_m / raw_m, 3),
        "restart_p50_us": round(p50, 1),
        "restart_p99_us": round(p99, 1),
        "targets_met": {
            "cast>=0.7x": act_c / raw_c >= 0.7,
            "call>=0.6x": act_k / raw_k >= 0.6,
            "idle<=8KB": act_m <= 8,
            "restart_p50<=200us": p50 <= 200,
        },
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
