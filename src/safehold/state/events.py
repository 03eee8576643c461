"""
Change notifications: Service Fabric's ``DictionaryChanged``, for ``Dictionary``.

``dictionary.on_change(callback)`` registers a plain function that is called on the
event loop, after the transaction's commit is durable, once per changed key, in
LSN order (and, inside one transaction, sets before removes)::

    @orders.on_change
    def changed(ev: DictionaryChange[str, Order]) -> None:
        print(ev.action, ev.key, ev.value, ev.lsn)

``add`` and ``update`` tell whether the key had a value before; ``remove`` is
sent only for a key that had one. A restore or a data loss replaces the whole
state: every listener then gets one ``rebuild`` event (key and value None) and
should re-read what it caches. A callback that raises is logged and ignored; it
runs on the loop, so it must not block (start a task for real work).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from safehold.state._writer import Committed

__all__ = ["ChangeAction", "ChangeHub", "DictionaryChange"]

log = logging.getLogger(__name__)
K = TypeVar("K")
V = TypeVar("V")


class ChangeAction(enum.Enum):
    """What happened to a key (Service Fabric's ``NotifyDictionaryChangedAction``)."""

    ADD = "add"
    UPDATE = "update"
    REMOVE = "remove"
    REBUILD = "rebuild"


@dataclass(frozen=True)
class DictionaryChange(Generic[K, V]):
    """
    One change to a dictionary.

    Attributes:
        dictionary: its name.
        action: add, update, remove, or rebuild (after a restore or data loss).
        key: the key (None for rebuild).
        value: the new value (None for remove and rebuild).
        lsn: the LSN of the transaction that made it (the restored LSN for rebuild).
    """

    dictionary: str
    action: ChangeAction
    key: K | None
    value: V | None
    lsn: int


Decoder = Callable[[ChangeAction, str | None, str | None, int], DictionaryChange[Any, Any]]
Listener = Callable[[DictionaryChange[Any, Any]], None]


class ChangeHub:
    """The store's listeners, by dictionary, and their delivery."""

    def __init__(self) -> None:
        self._listeners: dict[str, list[tuple[Decoder, Listener]]] = {}
        self.watched: frozenset[str] = frozenset()

    def add(self, name: str, decoder: Decoder, listener: Listener) -> None:
        """Call *listener* with each change of dictionary *name*, decoded by *decoder*."""
        self._listeners.setdefault(name, []).append((decoder, listener))
        self.watched = frozenset(self._listeners)

    def remove(self, name: str, listener: Listener) -> None:
        """Stop calling *listener*; unknown listeners are ignored."""
        kept = [(d, cb) for d, cb in self._listeners.get(name, []) if cb is not listener]
        if kept:
            self._listeners[name] = kept
        else:
            self._listeners.pop(name, None)
        self.watched = frozenset(self._listeners)

    def deliver(self, results: list[Committed]) -> None:
        """Deliver a committed group's events, in LSN order."""
        for r in results:
            for name, key, action, value in r.events:
                self._send(name, ChangeAction(action), key, value, r.lsn)

    def rebuild(self, lsn: int) -> None:
        """Tell every listener that the whole state was replaced."""
        for name in list(self._listeners):
            self._send(name, ChangeAction.REBUILD, None, None, lsn)

    def _send(
        self, name: str, action: ChangeAction, key: str | None, value: str | None, lsn: int
    ) -> None:
        for decoder, listener in list(self._listeners.get(name, [])):
            try:
                listener(decoder(action, key, value, lsn))
            except Exception:
                log.exception("a change listener of dictionary %r failed", name)
