"""ackvisor: Erlang/OTP-style supervised actors on Trio, with a Phoenix Channels endpoint
that makes the server responsible for delivery.

The public API is exported here; everything in modules starting with ``_`` or
not listed in ``__all__`` is private.
"""

from .actor import IGNORE, NOREPLY, Actor, ActorExit, ActorRef, ActorStatistics, Caller, current_actor
from .childspec import ChildSpec
from .exits import (
    KILL,
    KILLED,
    NOPROC,
    NORMAL,
    SHUTDOWN,
    ActorError,
    AlreadyStarted,
    CalleeExited,
    CallingSelf,
    CallTimeout,
    Error,
    Killed,
    Normal,
    NoProc,
    NoProcError,
    Shutdown,
    StartError,
    is_expected,
)
from .links import Down, Exit, MonitorRef, demonitor, link, monitor, trap_exit, unlink
from .mailbox import Mailbox, MailboxStatistics
from .node import Node, TaskActor, open_node
from .registry import Registry
from .supervisor import (
    ChildCounts,
    ChildInfo,
    DynamicSupervisor,
    Supervisor,
    SupervisorError,
    SupervisorRef,
    SupervisorStatistics,
)
from .timers import TimerRef, send_after

__version__ = "0.1.0"

__all__ = [
    "Actor", "ActorRef", "ActorExit", "ActorStatistics", "Caller", "IGNORE", "NOREPLY", "current_actor",
    "ChildSpec",
    "NORMAL", "SHUTDOWN", "KILL", "KILLED", "NOPROC", "Normal", "Shutdown", "Killed", "NoProc", "Error",
    "is_expected", "ActorError", "AlreadyStarted", "CalleeExited", "CallingSelf", "CallTimeout",
    "NoProcError", "StartError",
    "Down", "Exit", "MonitorRef", "link", "unlink", "monitor", "demonitor", "trap_exit",
    "Mailbox", "MailboxStatistics",
    "Node", "TaskActor", "open_node",
    "Registry",
    "Supervisor", "DynamicSupervisor", "SupervisorRef", "SupervisorError", "ChildInfo", "ChildCounts",
    "SupervisorStatistics",
    "TimerRef", "send_after",
    "__version__",
]
