"""Security settings reach every aiokafka client idstream builds, not only Faust's."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from idstream.drivers.faust.topics import admin_client, client_options, consumer
from idstream.settings import load_settings


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_tls_protocols_get_a_tls_context(protocol: str) -> None:
    settings = load_settings(
        environ={
            "IDSTREAM_SECURITY_PROTOCOL": protocol,
            "IDSTREAM_SASL_MECHANISM": "SCRAM-SHA-512",
            "IDSTREAM_SASL_USERNAME": "idstream",
            "IDSTREAM_SASL_PASSWORD": "secret",
        }
    )
    options = client_options(settings)
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"

    async def build() -> None:
        # aiokafka refuses SSL without a context (ValueError) when the client is made.
        admin = admin_client(settings)
        await admin.close()
        client = consumer(settings)
        await client.stop()

    asyncio.run(build())


def test_plaintext_has_no_tls_context() -> None:
    assert client_options(load_settings(environ={}))["ssl_context"] is None
