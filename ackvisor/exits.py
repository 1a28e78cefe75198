"""Exit reasons as values (OTP_SEMANTICS R-1..R-5), and the errors callers see.

An actor always ends with exactly one *reason*. Reasons are plain values so
they can be compared, logged and forwarded over links and monitors:

* :data:`NORMAL` - the actor finished its job.
* :data:`SHUTDOWN` / ``Shutdown(detail)`` - asked to stop (by a supervisor, or
  by itself "expectedly").
* :data:`KILLED` - what the victim of ``exit(ref, KILL)`` or a ``brutal_kill``
  dies with.  :data:`KILL` is only the *argument* of that untrappable exit.
* :data:`NOPROC` - the target did not exist.
* anything else is a crash: an :class:`Error` such as
  ``Error("no_ack_received", topic=..., message_id=...)`` or an exception
  instance raised by a handler.

:func:`is_expected` implements R-1 in exactly one place: only crashes are
crash-reported, restart a ``transient`` child, or count as abnormal.
"""

from __future__ import annotations

import linecache
import traceback
from dataclasses import dataclass, field
from typing import Any, Union

__all__ = [
    "Normal",
    "Shutdown",
    "Killed",
    "Kill",
    "NoProc",
    "Error",
    "Reason",
    "NORMAL",
    "SHUTDOWN",
    "KILLED",
    "KILL",
    "NOPROC",
    "is_expected",
    "reason_name",
    "reason_fields",
    "ActorError",
    "NoProcError",
    "CallTimeout",
    "CalleeExited",
    "CallingSelf",
    "AlreadyStarted",
    "StartError",
]


@dataclass(frozen=True, slots=True)
class Normal:
    """The actor finished its job; links to non-trapping peers ignore it (R-2)."""

    def __str__(self) -> str:
        return "normal"


@dataclass(frozen=True, slots=True)
class Shutdown:
    """An expected stop, optionally carrying a detail (OTP's ``{shutdown, Term}``)."""

    detail: Any = None

    def __str__(self) -> str:
        return "shutdown" if self.detail is None else f"shutdown({self.detail})"


@dataclass(frozen=True, slots=True)
class Killed:
    """What an actor dies with after an untrappable kill (R-3)."""

    def __str__(self) -> str:
        return "killed"


@dataclass(frozen=True, slots=True)
class Kill:
    """The argument of ``exit(ref, KILL)``: cannot be trapped (R-3)."""

    def __str__(self) -> str:
        return "kill"


@dataclass(frozen=True, slots=True)
class NoProc:
    """The target actor did not exist (or was already dead)."""

    def __str__(self) -> str:
        return "noproc"


@dataclass(frozen=True, slots=True)
class Error:
    """A named crash reason with structured details, e.g. ``Error("no_ack_received", topic=...)``.

    The details end up as keys of the crash report, so they must be plain data.
    """

    name: str
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    def __init__(self, name: str, **details: Any) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "details", details)

    def __str__(self) -> str:
        return self.name


Reason = Union[Normal, Shutdown, Killed, NoProc, Error, BaseException]

NORMAL = Normal()
SHUTDOWN = Shutdown()
KILLED = Killed()
KILL = Kill()
NOPROC = NoProc()


def is_expected(reason: object) -> bool:
    """True for ``normal``, ``shutdown`` and ``shutdown(detail)`` (R-1); everything else is a crash."""
    return isinstance(reason, (Normal, Shutdown))


def reason_name(reason: object) -> str:
    """A short stable string for logs: ``"normal"``, ``"no_ack_received"``, ``"ValueError"``..."""
    if isinstance(reason, BaseException):
        return type(reason).__name__
    return str(reason)


def reason_fields(reason: object) -> dict[str, Any]:
    """Log keys describing a reason: ``reason`` plus details or the exception and its traceback."""
    fields: dict[str, Any] = {"reason": reason_name(reason)}
    if isinstance(reason, Error):
        fields.update(reason.details)
    elif isinstance(reason, Shutdown) and reason.detail is not None:
        fields["detail"] = str(reason.detail)
    elif isinstance(reason, BaseException):
        fields["error"] = str(reason)
        fields["traceback"] = format_traceback(reason)
    return fields


def format_traceback(exc: BaseException, _depth: int = 0) -> str:
    """The usual ``Traceback (most recent call last): ...`` text, cheaply.

    Same layout as :func:`traceback.format_exception` (chained causes and
    contexts included, exception groups shown by their summary line) but
    without Python 3.11's caret lines, whose computation compiles every
    source line and dominated the cost of a crash report.
    """
    parts: list[str] = []
    if _depth < 5:
        if exc.__cause__ is not None:
            parts.append(format_traceback(exc.__cause__, _depth + 1))
            parts.append("\nThe above exception was the direct cause of the following exception:\n\n")
        elif exc.__context__ is not None and not exc.__suppress_context__:
            parts.append(format_traceback(exc.__context__, _depth + 1))
            parts.append("\nDuring handling of the above exception, another exception occurred:\n\n")
    if exc.__traceback__ is not None:
        parts.append("Traceback (most recent call last):\n")
        for frame, lineno in traceback.walk_tb(exc.__traceback__):
            code = frame.f_code
            parts.append(f'  File "{code.co_filename}", line {lineno}, in {code.co_name}\n')
            line = linecache.getline(code.co_filename, lineno, frame.f_globals).strip()
            if line:
                parts.append(f"    {line}\n")
    parts.extend(traceback.format_exception_only(type(exc), exc))
    return "".join(parts)


class ActorError(Exception):
    """Base class of the errors raised to *callers* of the actor API."""


class NoProcError(ActorError):
    """The target actor is not alive (OTP ``noproc``)."""

    def __init__(self, target: object) -> None:
        super().__init__(f"no such actor: {target} (noproc)")
        self.target = target
        self.reason = NOPROC


class CallTimeout(ActorError):
    """No reply within the call's timeout; the callee was left running (GS-12)."""

    def __init__(self, target: object, request: object, timeout: float) -> None:
        super().__init__(f"call to {target} timed out after {timeout}s (request {request!r})")
        self.target = target
        self.request = request
        self.timeout = timeout


class CalleeExited(ActorError):
    """The callee ended before replying; ``reason`` is its exit reason (GS-11)."""

    def __init__(self, target: object, reason: object) -> None:
        super().__init__(f"{target} exited before replying: {reason_name(reason)}")
        self.target = target
        self.reason = reason


class CallingSelf(ActorError):
    """An actor called itself, which could only deadlock (GS-11)."""


class AlreadyStarted(ActorError):
    """A name given at spawn is already registered to a live actor (GS-3)."""

    def __init__(self, name: str, owner: object) -> None:
        super().__init__(f"name {name!r} is already registered to {owner}")
        self.name = name
        self.owner = owner


class StartError(ActorError):
    """An actor or child failed to start; ``reason`` is why (an exception or a reason value)."""

    def __init__(self, what: str, reason: object) -> None:
        super().__init__(f"{what} failed to start: {reason_name(reason)}: {reason}")
        self.what = what
        self.reason = reason
