"""`idstream simulate --output FILE`: the file holds exactly the generator's records, as a
Kafka history (envelopes) or as plain values."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from idstream.codecs.envelope import decode_envelope
from idstream.drivers.partitioner import kafka_partition
from idstream.simulate import TrafficConfig, cli, generate


def main(argv: list[str]) -> int:
    # The subcommand alone, so that other commands' imports cannot break this test.
    assert argv[0] == "simulate"
    parser = argparse.ArgumentParser(prog="idstream simulate")
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(argv[1:]))


def test_output_file_holds_one_value_per_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "events.jsonl"
    argv = ["simulate", "--seed", "5", "--users", "50", "--events", "3000"]
    code = main([*argv, "--malformed-share", "0.01", "--format", "value", "--output", str(out)])
    assert code == 0
    expected = [
        r.value
        for r in generate(TrafficConfig(seed=5, users=50, events=3000, malformed_share=0.01))
    ]
    assert out.read_bytes().split(b"\n")[:-1] == expected
    printed = capsys.readouterr().out
    assert "3,000 records to" in printed
    assert "appLaunch" in printed
    assert "malformed" in printed


def test_output_file_holds_the_records_as_a_kafka_history_spread_over_days(
    tmp_path: Path,
) -> None:
    out = tmp_path / "events.jsonl"
    argv = ["simulate", "--seed", "5", "--events", "2000", "--days", "3", "--quiet"]
    assert main([*argv, "--partitions", "4", "--output", str(out)]) == 0
    envelopes = [decode_envelope(line) for line in out.read_bytes().splitlines()]
    expected = list(generate(TrafficConfig(seed=5, events=2000, mean_gap_ms=129_600)))
    assert [e.value for e in envelopes] == [r.value for r in expected]
    assert [e.timestamp for e in envelopes] == [r.record_ms for r in expected]
    assert all(e.partition == kafka_partition(e.key or b"", 4) for e in envelopes)
    for partition in range(4):
        offsets = [e.offset for e in envelopes if e.partition == partition]
        assert offsets == list(range(len(offsets)))
    span = envelopes[-1].timestamp - envelopes[0].timestamp
    assert 2.5 * 86_400_000 < span < 3.5 * 86_400_000


def test_app_codes_are_taken_from_the_option(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    argv = ["simulate", "--events", "500", "--app-codes", "a,b,c", "--quiet", "--output", str(out)]
    assert main(argv) == 0
    assert b'"appCode":"shop"' not in out.read_bytes()


@pytest.mark.parametrize(
    "bad", [["--users", "0"], ["--malformed-share", "2"], ["--rate", "-1"], ["--app-codes", ","]]
)
def test_invalid_options_exit_with_2(
    tmp_path: Path, bad: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["simulate", "--events", "10", *bad, "--output", str(tmp_path / "x.jsonl")]
    assert main(argv) == 2
    assert "idstream simulate:" in capsys.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_a_bar_on_a_terminal_and_one_line_elsewhere() -> None:
    records = list(generate(TrafficConfig(events=5000)))
    terminal = _Terminal()
    progress = cli.Progress(5000, terminal)
    assert len(list(progress.wrap(records))) == 5000
    progress.close()
    assert "\rsimulate [" in terminal.getvalue()
    assert "5,000/5,000" in terminal.getvalue()
    assert terminal.getvalue().endswith("\n")
    log = io.StringIO()
    progress = cli.Progress(5000, log)
    list(progress.wrap(records))
    progress.close()
    assert log.getvalue().startswith("simulate: 5,000 records in ")
    assert log.getvalue().count("\n") == 1
