"""The local driver and `idstream replay` / `idstream digest`: routing, bad input, stores,
interleavings, output files."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path

import orjson
import pytest
from tests.unit.scenarios.sdk import T0, attribution, dead_letters, outputs, record

from idstream.cli import main
from idstream.domain.messages import OutputTopic
from idstream.drivers.local.cli import Progress
from idstream.drivers.local.driver import LocalDriver
from idstream.drivers.partitioner import kafka_partition
from idstream.settings import load_settings
from idstream.simulate import Traffic, TrafficConfig
from idstream.simulate.cli import write_envelopes
from idstream.storage.memory import DictStore
from idstream.storage.rocks import RocksStore

TRAFFIC = [r.value for r in Traffic(TrafficConfig(seed=11, users=40, events=1500))]


def test_bad_records_go_to_the_dead_letter_and_processing_goes_on() -> None:
    driver = LocalDriver()
    driver.replay(
        [
            b"{not json",
            record("install", "e1", 0, "x"),
            b'{"type": "nope"}',
            record("appLaunch", "e2", 100, "x"),
        ]
    )
    assert dead_letters(driver) == ["malformed_json", "unknown_type"]
    assert set(attribution(driver)) == {"e1", "e2"}
    value = outputs(driver, OutputTopic.DEAD_LETTER)[0].value
    assert value is not None and value["originalBase64"] == "e25vdCBqc29u"


def test_the_record_timestamp_bounds_the_event_time() -> None:
    driver = LocalDriver()
    driver.submit(record("install", "e1", 0, "x"), key=b"x", record_timestamp=T0 - 25 * 3600_000)
    driver.submit(record("install", "e2", 0, "y"), key=b"y", record_timestamp=T0)
    driver.run()
    assert dead_letters(driver) == ["timestamp_out_of_range"]


def test_rocksdb_and_dict_stores_end_in_the_same_state(tmp_path: Path) -> None:
    memory = LocalDriver(store=DictStore(roundtrip=True))
    memory.replay(TRAFFIC)
    rocks = LocalDriver(store=RocksStore(tmp_path), flush_every=97)
    rocks.replay(TRAFFIC)
    assert rocks.digest() == memory.digest()
    rocks.close()
    # Rebuild: replaying again into the same state changes nothing (all duplicates).
    again = LocalDriver(store=RocksStore(tmp_path))
    again.replay(TRAFFIC)
    assert again.digest() == memory.digest()
    again.close()


@pytest.mark.parametrize(("seed", "partitions"), [(1, 1), (2, 3), (3, 8), (4, 2)])
def test_interleavings_of_partitions_end_in_the_same_state(seed: int, partitions: int) -> None:
    # The same input log (records, partitions, offsets) delivered in any interleaving.
    reference = LocalDriver(partitions=partitions)
    reference.replay(TRAFFIC)
    shuffled = LocalDriver(shuffle_seed=seed, partitions=partitions)
    shuffled.replay(TRAFFIC)
    assert shuffled.digest() == reference.digest()
    # Every record applied once, and the ticks `drain` appended to silent partitions.
    assert shuffled.stats.records == len(TRAFFIC) + shuffled.stats.skipped["tick"]
    assert list(shuffled.install_tables.held.scan()) == []


def test_a_seed_gives_one_run() -> None:
    runs = []
    for _ in range(2):
        driver = LocalDriver(shuffle_seed=9, partitions=3)
        driver.replay(TRAFFIC[:300])
        runs.append([(o.topic, o.key, o.value) for o in outputs(driver, OutputTopic.PROFILES)])
    assert runs[0] == runs[1]


def test_records_go_to_the_partition_the_kafka_producer_picks() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    producer = DefaultPartitioner()
    for n in range(200):
        key = f"fcm:device-{n}".encode()
        for partitions in (1, 3, 6, 12):
            every = list(range(partitions))
            assert kafka_partition(key, partitions) == producer(key, every, every)


def test_replay_and_digest_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join([*TRAFFIC[:400], b"not json at all"]) + b"\n\n")
    state, out = tmp_path / "state", tmp_path / "out"
    code = main(["replay", "--input", str(events), "--state", str(state), "--output", str(out)])
    assert code == 0
    printed = capsys.readouterr()
    assert "401 records" in printed.out and "events/s" in printed.out
    assert "replayed 401 records" in printed.err  # not a TTY: one final line
    digest_line = printed.out.strip().splitlines()[-1]
    files = sorted(p.name for p in out.iterdir())
    assert files == [
        "dead-letter.jsonl",
        "forget-register.jsonl",
        "profile-changes.jsonl",
        "profiles.jsonl",
        "resolved-events.jsonl",
    ]
    dead = [orjson.loads(line) for line in (out / "dead-letter.jsonl").read_bytes().splitlines()]
    assert dead[-1]["value"]["reason"] == "malformed_json"
    resolved = (out / "resolved-events.jsonl").read_bytes().splitlines()
    assert resolved and all(orjson.loads(line)["key"] for line in resolved)

    assert main(["digest", "--state", str(state)]) == 0
    assert capsys.readouterr().out.strip() == digest_line.removeprefix("state digest: ")
    # The same stages in memory, with the deployment's key for hashes of personal data.
    memory = LocalDriver(load_settings().rules())
    memory.replay([*TRAFFIC[:400], b"not json at all"])
    assert memory.digest() == digest_line.removeprefix("state digest: ")

    assert main(["digest", "--state", str(state), "--dump"]) == 0
    dump = capsys.readouterr().out.splitlines()
    assert dump[0].startswith("install_installs\t")


def test_replay_with_a_shuffle_seed_gives_the_same_digest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(TRAFFIC[:300]) + b"\n")
    digests = []
    for seed in ["1", "2"]:
        args = ["replay", "--input", str(events), "--state", str(tmp_path / f"s{seed}")]
        args += [
            "--output",
            str(tmp_path / f"o{seed}"),
            "--shuffle-seed",
            seed,
            "--partitions",
            "3",
        ]
        assert main(args) == 0
        digests.append(capsys.readouterr().out.strip().splitlines()[-1])
    assert digests[0] == digests[1]


def test_digest_of_a_missing_state_directory_fails(tmp_path: Path) -> None:
    assert main(["digest", "--state", str(tmp_path / "nope")]) == 2


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal() -> None:
    stream = _Terminal()
    progress = Progress(1000, stream)
    progress.update(10, 500)
    progress.finish(20)
    text = stream.getvalue()
    assert "\r[###############---------------]  50.0% 10 records" in text
    assert "100.0% 20 records" in text
    assert text.endswith("/s\n")


def test_replay_refuses_to_run_without_a_key_for_personal_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(TRAFFIC[:10]) + b"\n")
    monkeypatch.delenv("IDSTREAM_PERSONAL_DATA_KEY", raising=False)
    args = ["replay", "--input", str(events), "--state", str(tmp_path / "s")]
    assert main([*args, "--output", str(tmp_path / "o")]) == 2
    assert "IDSTREAM_PERSONAL_DATA_KEY" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    monkeypatch.setenv("IDSTREAM_DEV_MODE", "true")
    assert main([*args, "--output", str(tmp_path / "o")]) == 0


def _replay(*args: str | Path) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(["replay", *map(str, args)])
    return code, out.getvalue()


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def test_a_history_replayed_in_two_parts_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDSTREAM_PERSONAL_DATA_KEY", "test-key-of-sixteen-bytes")
    history = tmp_path / "history.jsonl"
    records = Traffic(TrafficConfig(seed=7, users=60, events=2000))
    write_envelopes(history, records, "idstream.events", 6)
    lines = _lines(history)
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_bytes(b"\n".join(lines[:1000]) + b"\n")
    second.write_bytes(b"\n".join(lines[1000:]) + b"\n")
    whole = ("--state", tmp_path / "whole-state", "--output", tmp_path / "whole")
    split = ("--state", tmp_path / "split-state", "--output", tmp_path / "split")
    assert _replay("--input", history, *whole)[0] == 0
    # The first part leaves the claims that wait for later records pending.
    assert _replay("--input", first, "--no-drain", *split)[0] == 0
    code, said = _replay("--input", second, *split)
    assert code == 0 and "already in the state" not in said
    for topic in ("resolved-events", "dead-letter", "profile-changes"):
        whole_out = sorted(_lines(tmp_path / "whole" / f"{topic}.jsonl"))
        assert sorted(_lines(tmp_path / "split" / f"{topic}.jsonl")) == whole_out, topic
    assert said.splitlines()[-1] == _replay("--input", history, *whole)[1].splitlines()[-1]


def test_a_continuation_onto_offsets_taken_by_the_last_runs_ticks_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IDSTREAM_PERSONAL_DATA_KEY", "test-key-of-sixteen-bytes")
    history = tmp_path / "history.jsonl"
    write_envelopes(history, Traffic(TrafficConfig(seed=7, users=60, events=2000)), "t", 6)
    lines = _lines(history)
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_bytes(b"\n".join(lines[:1000]) + b"\n")
    second.write_bytes(b"\n".join(lines[1000:]) + b"\n")
    state = ("--state", tmp_path / "state", "--output", tmp_path / "out")
    assert _replay("--input", first, *state)[0] == 0  # drained: ticks took offsets
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    code, _ = _replay("--input", second, *state)
    assert code == 2
    assert "--no-drain" in capsys.readouterr().err
    # Refused before anything was applied: no record lost in silence, outputs untouched.
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before


def test_state_built_with_another_key_for_personal_data_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    history = tmp_path / "history.jsonl"
    write_envelopes(history, Traffic(TrafficConfig(seed=7, users=20, events=300)), "t", 6)
    state = ("--state", tmp_path / "state", "--output", tmp_path / "out")
    monkeypatch.setenv("IDSTREAM_PERSONAL_DATA_KEY", "the-first-key-of-this-deployment")
    assert _replay("--input", history, *state)[0] == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    monkeypatch.setenv("IDSTREAM_PERSONAL_DATA_KEY", "another-key-of-another-deployment")
    assert _replay("--input", history, *state)[0] == 2
    assert "another key for personal data" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    # The same key again continues the state (every record is in it already).
    monkeypatch.setenv("IDSTREAM_PERSONAL_DATA_KEY", "the-first-key-of-this-deployment")
    code, said = _replay("--input", history, *state)
    assert code == 0 and "already in the state (skipped): 300" in said
