"""What the workers must have built: the in-process driver over the input log as it is on the
broker (record times and ticks included), for the checks of tests and benchmarks.

Driver layer. Same input log, same state (SPEC §5): its digest is the workers' digest.
"""

from __future__ import annotations

from idstream.domain.erasure import NOTHING_ERASED, Erased
from idstream.drivers.faust.export import read_envelopes
from idstream.drivers.local.driver import LocalDriver
from idstream.drivers.local.sinks import MemorySink
from idstream.settings import Settings


async def replayed(settings: Settings, register: Erased = NOTHING_ERASED) -> tuple[str, MemorySink]:
    """The digest and outputs of the in-process driver over `settings.topics.events` now on
    the broker; with `register`, knowing that forget register first, as a rebuild does."""
    sink = MemorySink()
    topic = settings.topics.events
    driver = LocalDriver(
        settings.rules(),
        partitions=settings.partitions,
        sink=sink,
        topic=topic,
        limits=settings.limits(),
        register=register,
    )
    try:
        async for record in read_envelopes(settings, topic):
            driver.submit_record(record)
        driver.run()
        return driver.digest(), sink
    finally:
        driver.close()
