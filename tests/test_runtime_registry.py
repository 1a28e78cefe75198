"""Registry: unique names and groups (REG-2, REG-3, PG-1, P-9)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from ackvisor import KILL, Actor, AlreadyStarted, ChildSpec, NoProcError


class Member(Actor):
    async def handle_cast(self, request):
        raise RuntimeError(request)

    async def handle_info(self, message):
        pass


async def test_REG2_unique_name_taken_raises_already_started(node):
    a = await node.spawn(Member, name="svc")
    b = await node.spawn(Member)
    with pytest.raises(AlreadyStarted) as info:
        node.register("svc", b)
    assert info.value.owner is a
    node.register("svc", a)  # re-registering the holder is fine
    assert node.whereis("svc") is a


async def test_REG2_register_dead_actor_is_noproc(node):
    a = await node.spawn(Member)
    await a.stop()
    with pytest.raises(NoProcError):
        node.register("late", a)
    with pytest.raises(NoProcError):
        node.registry.join("g", a)


async def test_REG3_names_vanish_on_death(node):
    a = await node.spawn(Member, name="svc")
    node.register("alias", a)
    assert set(node.registry.names()) == {"svc", "alias"}
    a.exit(KILL)
    await a.wait()
    assert node.whereis("svc") is None and node.whereis("alias") is None
    assert node.registry.names() == []


async def test_REG3_unregister(node):
    a = await node.spawn(Member, name="svc")
    node.unregister("svc")
    node.unregister("never-registered")
    assert node.whereis("svc") is None
    b = await node.spawn(Member, name="svc")
    assert node.whereis("svc") is b
    await a.stop()  # a's cleanup must not remove b's registration
    assert node.whereis("svc") is b


async def test_REG3_name_is_reregistered_by_a_restart(node):
    sup = await node.start_supervisor([ChildSpec("w", Member, name="worker")])
    first = node.whereis("worker")
    assert first is not None
    first.cast("crash")
    await first.wait()
    await trio.testing.wait_all_tasks_blocked()
    second = node.whereis("worker")
    assert second is not None and second is not first and second.alive
    assert sup.which_children()[0].ref is second


async def test_PG1_groups_join_leave_lookup_dispatch(node):
    reg = node.registry
    a = await node.spawn(Member)
    b = await node.spawn(Member)
    reg.join("room", a, "a-meta")
    reg.join("room", b)
    reg.join("room", a, "again")  # joining twice is allowed
    assert reg.members("room") == [a, b]
    assert reg.count("room") == 2
    assert reg.lookup("room") == [(a, "a-meta"), (a, "again"), (b, None)]
    seen = []
    assert reg.dispatch("room", lambda ref, value: seen.append((ref, value))) == 3
    assert seen == reg.lookup("room")
    assert list(reg.groups()) == ["room"]
    assert reg.leave("room", a) is True
    assert reg.members("room") == [a, b]  # one membership left
    assert reg.leave("room", a) is True
    assert reg.members("room") == [b]
    assert reg.leave("room", a) is False
    assert reg.members("unknown") == [] and reg.count("unknown") == 0 and reg.lookup("unknown") == []


async def test_PG1_members_removed_when_they_die(node):
    reg = node.registry
    refs = [await node.spawn(Member) for _ in range(3)]
    for r in refs:
        reg.join("room", r)
        reg.join("other", r)
    refs[1].cast("crash")
    await refs[1].wait()
    assert reg.members("room") == [refs[0], refs[2]]
    for r in (refs[0], refs[2]):
        await r.stop()
    assert reg.members("room") == [] and list(reg.groups()) == []
