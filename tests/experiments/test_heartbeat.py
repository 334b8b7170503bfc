"""The heartbeat: a line after `every_s` quiet seconds saying what the run does, none while lines come."""

from __future__ import annotations

import logging
import threading
import time

from experiments import heartbeat


def test_a_quiet_run_gets_a_line_that_says_what_it_does_and_a_busy_one_none(caplog):
    caplog.set_level(logging.INFO)
    with heartbeat.Heartbeat(every_s=0.4):
        heartbeat.phase("testing and analysing")
        for _ in range(8):  # lines every 0.1 s: nothing to add
            time.sleep(0.1)
            logging.getLogger("analysis").info("lesion sweep: a step")
        assert not [r for r in caplog.records if r.getMessage().startswith("still")]
        time.sleep(1.1)  # quiet: a line about every 0.4 s
    quiet = [r.getMessage() for r in caplog.records if r.getMessage().startswith("still")]
    assert 2 <= len(quiet) <= 3, quiet
    assert (
        quiet[0].startswith("still testing and analysing (0 s since the last line)")
        or "s since the last line" in quiet[0]
    )
    time.sleep(0.6)  # stopped: no more lines
    assert len([r for r in caplog.records if r.getMessage().startswith("still")]) == len(quiet)


def test_a_heartbeat_inside_another_keeps_the_outer_clock_and_one_watcher(caplog):
    """The command's heartbeat (from its first line, around the imports) and the run's inside it: the
    run's does not restart the clock (the imports' quiet seconds count) nor add a second watcher."""
    caplog.set_level(logging.INFO)
    with heartbeat.Heartbeat(every_s=0.5):
        time.sleep(0.3)  # the imports
        with heartbeat.Heartbeat(every_s=0.5):
            time.sleep(0.5)  # 0.8 s quiet in all: one line from the outer clock, not none
            inner = [r for r in caplog.records if r.getMessage().startswith("still")]
            assert len(inner) == 1, [r.getMessage() for r in inner]
        assert sum(t.name == "heartbeat" for t in threading.enumerate()) == 1  # the outer's only
    time.sleep(0.6)
    assert len([r for r in caplog.records if r.getMessage().startswith("still")]) == 1
