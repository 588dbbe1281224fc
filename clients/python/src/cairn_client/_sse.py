"""Server-sent events, and where a change stream resumes. No I/O here: both clients feed it lines."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .errors import ApiError, error_from_problem
from .models import Change


@dataclass
class Event:
    event: str = "message"
    data: str = ""
    id: str | None = None


@dataclass
class EventParser:
    """Turns the lines of an event stream into events (the WHATWG rules this server needs: ``event``,
    ``data``, ``id``; comments and unknown fields ignored)."""

    _event: str = ""
    _data: list[str] = field(default_factory=list)
    _id: str | None = None

    def feed(self, line: str) -> Event | None:
        """The event a blank line completes, if any."""
        if not line:
            if not self._data and not self._event:
                return None
            out = Event(event=self._event or "message", data="\n".join(self._data), id=self._id)
            self._event, self._data, self._id = "", [], None
            return out
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        return None


@dataclass
class Resume:
    """Where a change stream resumes, so that a dropped connection loses and repeats nothing.

    The server numbers events by commit sequence, and the changes of one commit share it, so resuming after
    the last sequence seen could skip the rest of a commit cut off mid-way. A stream therefore resumes after
    the sequence before the last one seen and drops the changes of that last commit it already delivered.
    """

    since: int
    last_seq: int = 0
    delivered: set[tuple[str, str, int]] = field(default_factory=set)

    def resume_after(self) -> int:
        """The sequence to ask the changes after when reconnecting."""
        if self.last_seq == 0:
            return self.since
        return max(self.since, self.last_seq - 1)

    def accept(self, change: Change) -> bool:
        """Whether ``change`` is new (and records it as delivered)."""
        key = (change.collection, change.id, change.version)
        if change.seq < self.last_seq:
            return False
        if change.seq == self.last_seq:
            if key in self.delivered:
                return False
        else:
            if self.last_seq:
                self.since = self.last_seq  # That commit was complete: a later one began.
            self.last_seq = change.seq
            self.delivered = set()
        self.delivered.add(key)
        return True


def change_of(event: Event) -> Change | None:
    """The change an event carries; ``None`` for events of other kinds. An ``error`` event raises the
    problem it carries."""
    if event.event == "change":
        return Change.from_json(json.loads(event.data))
    if event.event == "error":
        try:
            problem = json.loads(event.data)
        except ValueError:
            problem = {"detail": event.data}
        status = int(problem.get("status", 500)) if isinstance(problem, dict) else 500
        raise error_from_problem(status, problem if isinstance(problem, dict) else {"detail": event.data})
    return None


__all__ = ["ApiError", "Event", "EventParser", "Resume", "change_of"]
