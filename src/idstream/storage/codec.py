"""Typed value (de)serialization for state tables: msgspec msgpack, one codec per table.

Storage layer. Values are frozen dataclasses of plain data (see domain.ports.TableFactory);
decoding is typed, so a table hands back the same dataclasses it was given.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec

V = TypeVar("V")


class ValueCodec(Generic[V]):
    """msgpack encoder and typed decoder for one value type (msgspec caches per instance)."""

    __slots__ = ("_decoder", "_encoder", "value_type")

    def __init__(self, value_type: type[V]) -> None:
        self.value_type = value_type
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder: msgspec.msgpack.Decoder[V] = msgspec.msgpack.Decoder(value_type)

    def encode(self, value: V) -> bytes:
        return self._encoder.encode(value)

    def decode(self, data: bytes) -> V:
        return self._decoder.decode(data)


def canonical_json(value: Any) -> bytes:
    """A canonical JSON form of a state value: sorted keys, no whitespace (digests, dumps)."""
    return msgspec.json.encode(value, order="sorted")
