"""`idstream gateway --tls-cert --tls-key` serves HTTPS (a child process on a real broker)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from idstream.cli import main
from idstream.devbroker import free_port
from tests.support.gateway import (
    WRITE_KEY,
    basic,
    gateway_env,
    gateway_settings,
    start_gateway_process,
)
from tests.support.kafka import read_all
from tests.support.names import UniqueNames
from tests.support.processes import ProcessPool

pytestmark = [pytest.mark.integration]


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idstream-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_with_the_given_certificate(
    kafka_bootstrap: str, names: UniqueNames, processes: ProcessPool, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    settings = gateway_settings(kafka_bootstrap, names)
    port = free_port()
    env = gateway_env(settings, port)
    await start_gateway_process(processes, env, "--tls-cert", str(cert), "--tls-key", str(key))
    trust = ssl.create_default_context(cafile=str(cert))
    body = {"type": "track", "event": "x", "messageId": "tls-1", "anonymousId": "a"}
    async with aiohttp.ClientSession() as session:
        url = f"https://127.0.0.1:{port}/v1/track"
        async with session.post(url, json=body, headers=basic(WRITE_KEY), ssl=trust) as response:
            assert response.status == 200, await response.text()
        with pytest.raises(aiohttp.ClientError):
            await session.post(f"http://127.0.0.1:{port}/v1/track", json=body)
    records = await read_all(kafka_bootstrap, settings.topics.events)
    assert [key for key, _ in records] == [b"a"]


def test_a_certificate_needs_its_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gateway", "--tls-cert", "cert.pem"]) == 2
    assert "--tls-cert and --tls-key go together" in capsys.readouterr().err
