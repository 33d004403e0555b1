"""``secstream bench``'s order check and its bounds (the bench itself runs real
processes; see docs/benchmarks.md)."""

from __future__ import annotations

import pytest

from secstream.bench import MAX_IDLE, SeqCheck, _idle_report, idle_steps, run_idle
from secstream.cli import main


def test_the_order_check_counts_gaps_and_duplicates() -> None:
    check = SeqCheck()
    for seq in (0, 1, 2, 2, 5, 6, 1, 7):
        check.see(seq)
    assert (check.gaps, check.duplicates, check.expected) == (2, 2, 8)


def test_in_order_events_are_neither() -> None:
    check = SeqCheck()
    for seq in range(1000):
        check.see(seq)
    assert (check.gaps, check.duplicates) == (0, 0)


@pytest.mark.parametrize("argv", [["--steady-rate", "0"], ["--steady-rate", "200000"],
                                  ["--steady-seconds", "-1"], ["--steady-seconds", "4000"]])
def test_the_fixed_rate_run_is_bounded(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", *argv])
    assert exc.value.code == 2
    assert "--steady-rate must be in" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--publish-seconds", "0"], ["--publish-seconds", "601"],
                                  ["--publish-connections", "0"],
                                  ["--publish-connections", "10001"],
                                  ["--publish-concurrency", "0"], ["--rounds", "0"]])
def test_the_publish_run_is_bounded(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--publish", *argv])
    assert exc.value.code == 2
    assert "--publish-seconds must be in" in capsys.readouterr().err


@pytest.mark.parametrize("spec", ["", "0", "10,5", "5,5", "x", "50001", "0,10"])
def test_the_idle_steps_are_bounded(spec: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="--idle takes"):
        idle_steps(spec)
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--idle", spec])
    assert exc.value.code == 2
    assert "--idle takes" in capsys.readouterr().err


def test_idle_steps_read_cumulative_counts() -> None:
    assert idle_steps("5000,10000") == [5000, 10000]
    assert idle_steps(str(MAX_IDLE)) == [MAX_IDLE]


def test_the_idle_scenario_measures_a_real_server() -> None:
    """Real processes: a server, an embedded Redis, a client process holding the sockets."""
    results = run_idle([20, 60])
    assert [r.connections for r in results] == [0, 20, 60]
    assert all(r.rss_kib > 10_000 for r in results)  # a Python server's RSS, in KiB
    report = _idle_report(results)
    assert report.count("\n") == 4 and "| 60 |" in report
