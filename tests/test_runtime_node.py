"""The node: embedding with ``open_node``, ordered shutdown, ``tree()``, Ctrl-C (APP-2, APP-3, 9.8.3)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest
import trio
import trio.testing

from ackvisor import SHUTDOWN, Actor, ChildSpec, DynamicSupervisor, open_node


class Logged(Actor):
    async def init(self, id, log):
        self.id = id
        self.log = log

    async def handle_cast(self, request):
        raise RuntimeError(request)

    async def terminate(self, reason):
        self.log.append((self.id, reason))


async def test_APP2_open_node_shuts_down_in_reverse_order_on_block_exit():
    log = []
    async with open_node() as node:
        await node.spawn(Logged, "first", log)
        await node.start_supervisor([ChildSpec(i, Logged, i, log) for i in ("s1", "s2")])
        await node.spawn(Logged, "last", log)
        assert node.actor_count == 5
    assert log == [("last", SHUTDOWN), ("s2", SHUTDOWN), ("s1", SHUTDOWN), ("first", SHUTDOWN)]
    assert node.actor_count == 0


async def test_APP2_open_node_shutdown_honours_per_actor_shutdown_time(autojump_clock):
    class Hangs(Actor):
        async def terminate(self, reason):
            await trio.sleep_forever()

    async with open_node() as node:
        ref = await node.spawn(Hangs, shutdown=3)
        t0 = trio.current_time()
    assert trio.current_time() - t0 == pytest.approx(3)
    assert ref.exit_reason is not None and str(ref.exit_reason) == "killed"


async def test_APP2_open_node_shuts_down_in_order_when_body_raises():
    log = []
    with pytest.raises(ValueError, match="user error"):  # not wrapped in an ExceptionGroup
        async with open_node() as node:
            await node.spawn(Logged, "a", log)
            await node.spawn(Logged, "b", log)
            raise ValueError("user error")
    assert [i for i, _ in log] == ["b", "a"]


async def test_APP2_dead_top_level_actors_are_skipped_and_forgotten():
    log = []
    async with open_node() as node:
        a = await node.spawn(Logged, "a", log)
        b = await node.spawn(Logged, "b", log)
        b.cast("crash")
        await b.wait()
        assert node.actors() == [a]
    assert [i for i, _ in log] == ["b", "a"]  # b: its own crash terminate; a: shutdown


async def test_node_tree_snapshot(node):
    log = []
    inner = ChildSpec.supervisor("inner", [ChildSpec("x", Logged, "x", log)], strategy="one_for_all")
    sup = await node.start_supervisor(
        [ChildSpec("a", Logged, "a", log), inner, ChildSpec("dyn", DynamicSupervisor)], name="root"
    )
    await node.spawn(Logged, "solo", log, name="solo")
    a = sup.which_children()[0].ref
    a.cast("boom")
    await a.wait()
    await trio.testing.wait_all_tasks_blocked()
    tree = node.tree()
    assert [t["id"] for t in tree] == ["root", "solo"]
    root = tree[0]
    assert root["kind"] == "supervisor" and root["strategy"] == "one_for_one" and root["state"] == "running"
    kids = root["children"]
    assert [(k["id"], k["kind"], k["state"], k["restarts"]) for k in kids] == [
        ("a", "worker", "running", 1),
        ("inner", "supervisor", "running", 0),
        ("dyn", "supervisor", "running", 0),
    ]
    assert kids[0]["last_exit"] == "RuntimeError: boom"
    assert kids[1]["strategy"] == "one_for_all"
    assert [k["id"] for k in kids[1]["children"]] == ["x"]
    assert kids[2]["children"] == []
    assert tree[1]["kind"] == "worker" and "children" not in tree[1]
    import json

    json.dumps(tree)  # plain data


async def test_node_spawn_refused_while_closing():
    async with open_node() as node:
        pass
    with pytest.raises(RuntimeError):
        await node.spawn(Logged, "late", [])


# ------------------------------------------------------------------ Ctrl-C


SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import structlog, trio
    from ackvisor import Actor, ChildSpec, open_node

    # A parent that ignores SIGINT (a background CI job) must not make this test hang.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    structlog.configure(processors=[lambda *_: (_ for _ in ()).throw(structlog.DropEvent())])
    MODE = sys.argv[1]

    class W(Actor):
        async def init(self, id):
            self.id = id

        async def handle_cast(self, request):
            signal.raise_signal(signal.SIGINT)  # lands inside this actor's handler
            print("unreachable", flush=True)

        async def terminate(self, reason):
            await trio.sleep(0.001)  # async cleanup still works
            print(f"terminate {self.id} {reason}", flush=True)

    async def main():
        async with open_node() as node:
            sup = await node.start_supervisor([ChildSpec(i, W, i) for i in "abc"])
            print("tree up", flush=True)
            if MODE == "body":
                signal.raise_signal(signal.SIGINT)
            elif MODE == "task":
                async def raiser():
                    await trio.sleep(0.001)
                    signal.raise_signal(signal.SIGINT)
                async with trio.open_nursery() as n:
                    n.start_soon(raiser)
                    await trio.sleep(30)
            elif MODE == "actor":
                sup.which_children()[1].ref.cast("interrupt")
            await trio.sleep(30)  # MODE == "parent": the parent sends SIGINT
        print("block exited normally", flush=True)

    trio.run(main)
    """
)


@pytest.mark.parametrize("mode", ["body", "task", "actor", "parent"])
def test_ctrl_c_stops_tree_in_reverse_order_and_raises_plain_keyboard_interrupt(tmp_path, mode):
    script = tmp_path / "ackvisor_ctrl_c_probe.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # only our own SIGINT reaches it, not one sent to pytest's group
    )
    try:
        assert proc.stdout.readline().strip() == "tree up"
        if mode == "parent":
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert out.splitlines() == ["terminate c shutdown", "terminate b shutdown", "terminate a shutdown"], err
    assert err.rstrip().splitlines()[-1] == "KeyboardInterrupt", err
    assert "ExceptionGroup" not in err and "During handling" not in err and "Cancelled" not in err, err
    assert proc.returncode in (-signal.SIGINT, 130, 1)


SLOW_SCRIPT = textwrap.dedent(
    """
    import signal
    import structlog, trio
    from ackvisor import Actor, ChildSpec, open_node

    signal.signal(signal.SIGINT, signal.default_int_handler)
    structlog.configure(processors=[lambda *_: (_ for _ in ()).throw(structlog.DropEvent())])

    class W(Actor):
        async def init(self, id):
            self.id = id

        async def terminate(self, reason):
            print(f"terminate begin {self.id}", flush=True)
            await trio.sleep(30)
            print(f"terminate end {self.id}", flush=True)

    async def main():
        async with open_node() as node:
            await node.start_supervisor([ChildSpec(i, W, i, shutdown=60) for i in "abc"])
            print("tree up", flush=True)
            await trio.sleep(60)

    trio.run(main)
    """
)


def test_APP4_second_ctrl_c_during_orderly_shutdown_kills_the_rest(tmp_path):
    script = tmp_path / "ackvisor_ctrl_c_twice_probe.py"
    script.write_text(SLOW_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout.readline().strip() == "tree up"
        proc.send_signal(signal.SIGINT)
        assert proc.stdout.readline().strip() == "terminate begin c"  # the orderly stop is under way
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert out == ""  # c's terminate was cut short; b and a were killed without terminate
    assert err.rstrip().splitlines()[-1] == "KeyboardInterrupt", err
    assert "ExceptionGroup" not in err, err
