"""A one-slot, latest-wins hand-off between a subscription callback and a worker thread.

The image callback must return at once (it shares the executor with joint states), and a slow
consumer must never build a backlog: when the worker is busy, a newer frame *replaces* the waiting
one and the replaced frame counts as dropped (image_pipeline's ``BufferQueue`` behaviour, depth 1).
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

__all__ = ["LatestSlot", "close_and_join"]

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """Holds at most one item; :meth:`put` never blocks, :meth:`get` waits for an item or :meth:`close`."""

    def __init__(self):
        self._cond = threading.Condition()
        self._item: T | None = None
        self._has_item = False
        self._closed = False
        self.dropped = 0  # items replaced before a consumer took them

    def put(self, item: T) -> bool:
        """Store ``item`` (dropping a waiting one). Returns True if an older item was dropped."""
        with self._cond:
            dropped = self._has_item
            if dropped:
                self.dropped += 1
            self._item, self._has_item = item, True
            self._cond.notify()
            return dropped

    def get(self, timeout: float | None = None) -> T | None:
        """The waiting item (removing it), or None on timeout or once closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._has_item or self._closed, timeout=timeout):
                return None
            if self._closed:
                return None
            item, self._item, self._has_item = self._item, None, False
            return item

    def close(self) -> None:
        """Wake every waiting consumer; later :meth:`get` calls return None at once."""
        with self._cond:
            self._closed = True
            self._item, self._has_item = None, False
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


def close_and_join(slot: LatestSlot, worker: threading.Thread, *, timeout: float = 10.0) -> None:
    """Close ``slot`` and wait up to ``timeout`` seconds for ``worker``, its consumer thread, to end.

    Safe from the worker itself (it is then not joined) and after the worker has ended.
    """
    slot.close()
    if worker.is_alive() and worker is not threading.current_thread():
        worker.join(timeout=timeout)
