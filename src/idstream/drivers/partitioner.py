"""Which partition Kafka's default producer partitioner gives a key (murmur2, as Java's).

Drivers layer. The in-process driver places keyed records exactly where a producer would, so a
plain file replayed in process has the partitions the same records get on a broker.
"""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def kafka_partition(key: bytes, partitions: int) -> int:
    """The partition of a keyed record among `partitions` (Java's `Utils.toPositive(murmur2)`)."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions
