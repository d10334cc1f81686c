"""Progress: a bar on a terminal, periodic log lines when the output goes to a file."""

import logging

from pipelines.core.progress import Progress


def test_a_log_gets_a_line_with_counts_rate_and_time_left(caplog):
    caplog.set_level(logging.INFO, logger="pipelines.core.progress")
    with Progress(total=10, desc="epoch 1", unit="step", every_s=0.0, tty=False) as p:
        for _ in range(4):
            p.update()
        p.set_postfix(loss="0.5")
        p.update(2)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5  # one a call: every_s=0
    assert lines[0].startswith("epoch 1: 1/10 step in ")
    assert lines[-1].startswith("epoch 1: 6/10 step in ") and "left" in lines[-1]
    assert lines[-1].endswith(", loss=0.5")
    assert p.n == 6


def test_no_log_lines_between_intervals_or_on_a_terminal(caplog):
    caplog.set_level(logging.INFO, logger="pipelines.core.progress")
    with Progress(total=3, desc="x", every_s=3600.0, tty=False) as p:
        p.update(3)
    with Progress(desc="y", every_s=0.0, tty=True) as p:  # the tqdm bar speaks instead
        p.update(5)
    assert caplog.records == []
    assert "y: 5 it in " in p.line() and "left" not in p.line()  # no total, no time left
