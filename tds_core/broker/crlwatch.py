"""Reload a broker when its CRL file changes, so a revocation reaches it without anyone sending SIGHUP."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size


class CrlWatcher:
    """Poll a CRL file (cheap: one stat per interval) and call `on_change` when it is replaced.

    `tds pki revoke` writes the new CRL atomically (rename), so a changed (mtime, size) means a whole new file.
    """

    def __init__(self, path: Path, on_change: Callable[[], None], interval: float = 0.5) -> None:
        self.path = Path(path)
        self._on_change = on_change
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="crl-watch", daemon=True)
        self._last = _stamp(self.path)

    def start(self) -> CrlWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            now = _stamp(self.path)
            if now != self._last and now is not None:
                self._last = now
                log.info("CRL %s changed: reloading the broker", self.path)
                try:
                    self._on_change()
                except Exception:  # a failed reload must not stop the watching
                    log.exception("broker reload after CRL change failed")
