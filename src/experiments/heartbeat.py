"""No silence on the terminal longer than `every_s` seconds while a run works.

Progress lines come from the work itself (the epoch bar, `lesion sweep: 12/200 test passes`,
`backbone features: 24 images`), but how long one step takes depends on the model and on the
machine: a ResNet-152 test batch at 224 px takes 2 s on two idle CPU cores and 30 s on the same
cores shared with other jobs. So a thread watches the run's log and the progress bars, and after
`every_s` seconds without a line says what the run is doing and how long it has been quiet:
`still testing and analysing (10 s since the last line)`.

    with Heartbeat(): ...          # the command (experiments.__main__), from its first line; a run, rank 0
    heartbeat.phase("fitting")     # what the next quiet line says the run is doing
    heartbeat.beat()               # a line was written outside logging (a progress bar's redraw)
"""

from __future__ import annotations

import logging
import sys
import threading
import time

from tqdm import tqdm

log = logging.getLogger("experiments.run")

_state: dict = {"last": time.monotonic(), "phase": "starting"}


def beat() -> None:
    """Something was just written to the terminal."""
    _state["last"] = time.monotonic()


def phase(what: str) -> None:
    """What the run does from now on (said by a quiet line); starting a phase counts as a line."""
    _state["phase"] = what
    beat()


class _Stamp(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        beat()


class Heartbeat:
    def __init__(self, every_s: float = 10.0):
        self.every_s = every_s
        self._stop = threading.Event()
        self._stamp = _Stamp(level=logging.INFO)
        self._thread = threading.Thread(target=self._watch, name="heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        """One watcher a process: a Heartbeat inside another (the command's, around the imports, and
        the run's) only keeps the outer one's clock."""
        self.outer = not _state.get("watching")
        if self.outer:
            _state["watching"] = True
            phase("starting")  # not what an earlier run in this process was doing
            logging.getLogger().addHandler(self._stamp)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if not self.outer:
            return
        _state["watching"] = False
        self._stop.set()
        try:
            self._thread.join()  # a second signal can raise here: the handler still goes
        finally:
            logging.getLogger().removeHandler(self._stamp)

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, self.every_s / 4)):
            quiet = time.monotonic() - _state["last"]
            if quiet >= self.every_s:
                # through tqdm's lock: a progress bar in the middle of a long batch is cleared, the line
                # written, the bar redrawn below it (else the line lands inside the bar's line)
                with tqdm.external_write_mode(file=sys.stdout):  # tqdm: stdout and stderr are one terminal
                    log.info("still %s (%.0f s since the last line)", _state["phase"], quiet)
                beat()  # in case the root logger's level or handlers did not pass it through _Stamp
