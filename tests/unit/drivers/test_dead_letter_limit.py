"""The dead-letter size limit reaches the in-process driver's dead letters (setting
dead_letter_max_bytes, passed as LocalDriver(dead_letter_max_bytes=...))."""

from __future__ import annotations

import base64

from idstream.domain.messages import OutputTopic
from idstream.drivers.local.driver import LocalDriver
from idstream.drivers.local.sinks import MemorySink


def test_the_local_driver_cuts_dead_letters_at_its_limit() -> None:
    sink = MemorySink()
    driver = LocalDriver(sink=sink, dead_letter_max_bytes=70_000)
    raw = b'{"type":"appLaunch","platform":"' + b"x" * 100_000 + b'"}'
    try:
        driver.submit(raw, key=b"device-1")
        driver.run()
    finally:
        driver.close()
    [letter] = sink[OutputTopic.DEAD_LETTER]
    assert letter.value is not None
    assert letter.value["reason"] == "oversize"
    assert letter.value["truncated"] is True
    assert letter.value["originalLength"] == len(raw)
    assert base64.b64decode(letter.value["originalBase64"]) == raw[:70_000]
