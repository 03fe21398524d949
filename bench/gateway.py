"""The ingestion gateway: tracking-API batches of 100 messages through `idstream gateway`.

A child `python -m idstream gateway` (fresh topics each run) takes R requests of B messages
from C concurrent HTTP clients; a run is timed from the first request to the last 200 (every
event acknowledged by Kafka, acks=all). Then the very records the gateway produced (mapped
beforehand, untimed) go straight to Kafka through the gateway's own KafkaSink (same producer
and record batches, same concurrency): the ratio is what HTTP, mapping and validation cost.
One more request (and its records) warms each side up first, untimed.
Broker: $KAFKA_BOOTSTRAP_SERVERS if set, else a throwaway `idstream.devbroker.LocalKafka`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gzip
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.ceiling import _delete_topics, broker
from bench.harness import Report, Sample
from idstream.devbroker import free_port
from idstream.drivers.faust.topics import topic_configs
from idstream.gateway.cli import READY_LINE
from idstream.gateway.intake import IntakeConfig, Origin, Record, messages_of, parse, take
from idstream.gateway.kafka import KafkaSink
from idstream.settings import Settings, Topics

DESCRIPTION = "idstream gateway: HTTP batches of 100 tracking-API messages to Kafka (acks=all)"
WRITE_KEY = "bench-write-key"
APP_CODE = "bench-app"
# The gateway's producer settings (idstream/gateway/kafka.py), for the record.
_PRODUCER = {"acks": "all", "enable_idempotence": True, "linger_ms": 2}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=400, help="HTTP requests per run (R)")
    parser.add_argument("--batch", type=int, default=100, help="messages per request (B)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (C)")
    parser.add_argument("--partitions", type=int, default=6, help="input partitions")
    parser.add_argument("--gzip", action="store_true", help="gzip the bodies (as RudderStack)")


def bodies(requests: int, batch: int, seed: int = 7) -> list[bytes]:
    """Seeded batches: 1,000 devices; 70 % track, 20 % screen, 10 % identify."""
    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(hours=1)
    out = []
    for r in range(requests):
        messages = []
        for m in range(batch):
            device = f"dev-{rng.randrange(1000):04d}"
            when = (start + timedelta(milliseconds=r * batch + m)).isoformat()
            message: dict[str, Any] = {
                "messageId": f"{r}-{m}-{uuid.UUID(int=rng.getrandbits(128))}",
                "anonymousId": f"anon-{device}",
                "timestamp": when,
                "context": {
                    "device": {"id": device, "manufacturer": "Google", "model": "Pixel 8"},
                    "os": {"name": "Android", "version": "14"},
                    "app": {"version": "3.14.0"},
                    "library": {"name": "analytics-kotlin", "version": "1.16.0"},
                    "locale": "en-US",
                },
            }
            roll = rng.random()
            if roll < 0.7:
                message |= {
                    "type": "track",
                    "event": rng.choice(["Product Viewed", "Product Added", "Order Completed"]),
                    "properties": {"sku": f"sku-{rng.randrange(500)}", "price": 19.9},
                }
            elif roll < 0.9:
                message |= {"type": "screen", "name": rng.choice(["Home", "Cart", "Search"])}
            else:
                user = f"u-{device}"
                message |= {"type": "identify", "userId": user, "traits": {"plan": "free"}}
            messages.append(message)
        out.append(orjson.dumps({"batch": messages, "sentAt": datetime.now(UTC).isoformat()}))
    return out


def expected_records(payloads: list[bytes]) -> list[list[Record]]:
    """The records the gateway produces for each body (mapped here, outside any timing)."""
    origin = Origin("batch", APP_CODE, int(time.time() * 1000), "bench")
    out = []
    for body in payloads:
        intake = take(messages_of("batch", parse(body), body), APP_CODE, IntakeConfig(), origin)
        assert not intake.dead_letters, "the benchmark's messages must all be valid"
        out.append(intake.events)
    return out


def _settings(bootstrap: str, partitions: int) -> Settings:
    tag = uuid.uuid4().hex[:8]
    names = {f: f"bench.gateway.{tag}.{f}" for f in Topics.__dataclass_fields__}
    return replace(
        Settings(),
        bootstrap_servers=bootstrap,
        app_id=f"bench-gateway-{tag}",
        partitions=partitions,
        topics=Topics(**names),
    )


@contextlib.contextmanager
def gateway_process(settings: Settings, port: int, log: Path) -> Any:
    env = {
        **os.environ,
        "IDSTREAM_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "IDSTREAM_APP_ID": settings.app_id,
        "IDSTREAM_PARTITIONS": str(settings.partitions),
        "IDSTREAM_GATEWAY_PORT": str(port),
        "IDSTREAM_GATEWAY_WRITE_KEYS": f"{WRITE_KEY}={APP_CODE}",
        **{
            f"IDSTREAM_TOPICS__{f.upper()}": getattr(settings.topics, f)
            for f in Topics.__dataclass_fields__
        },
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "idstream", "gateway"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while READY_LINE not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gateway did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.1)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def load(url: str, payloads: list[bytes], concurrency: int, zipped: bool) -> Sample:
    """POST every body with `concurrency` clients; events = what the gateway says it produced."""
    token = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
    if zipped:
        headers["Content-Encoding"] = "gzip"
        payloads = [gzip.compress(p) for p in payloads]
    warm_up, payloads = payloads[0], payloads[1:]
    queue = list(reversed(payloads))
    produced = 0
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def client() -> None:
            nonlocal produced
            while queue:
                body = queue.pop()
                sent = time.perf_counter()
                async with session.post(url, data=body) as response:
                    answer = await response.json()
                    if response.status != 200:
                        raise RuntimeError(f"gateway answered {response.status}: {answer}")
                latencies.append(time.perf_counter() - sent)
                produced += answer["produced"]

        # Untimed: connections, the producer's first metadata.
        async with session.post(url, data=warm_up) as response:
            assert response.status == 200, await response.text()
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    latencies.sort()
    return Sample(
        produced,
        seconds,
        {
            "requests": len(payloads),
            "requests_per_s": len(payloads) / seconds,
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        },
    )


async def direct(
    settings: Settings, warm_up: list[Record], requests: list[list[Record]], concurrency: int
) -> Sample:
    """The same records straight to Kafka through the gateway's own KafkaSink (same producer,
    same record batches), request by request with the same concurrency: no HTTP, no mapping."""
    sink = KafkaSink(settings, timeout_s=60, max_pending_bytes=1 << 40)
    await sink.start()
    try:
        await sink.deliver(warm_up, [])
        queue = list(reversed(requests))

        async def client() -> None:
            while queue:
                await sink.deliver(queue.pop(), [])

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return Sample(sum(len(r) for r in requests), time.perf_counter() - started)
    finally:
        await sink.stop()


def _run_once(bootstrap: str, args: argparse.Namespace, payloads: list[bytes]) -> Sample:
    settings = _settings(bootstrap, args.partitions)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            log = Path(tmp) / "gateway.log"
            with gateway_process(settings, port, log):
                url = f"http://127.0.0.1:{port}/v1/batch"
                try:
                    return asyncio.run(load(url, payloads, args.concurrency, args.gzip))
                except RuntimeError:
                    tail = log.read_text(errors="replace").splitlines()[-40:]
                    print("gateway log (tail):", *tail, sep="\n", file=sys.stderr)
                    raise
        finally:
            with contextlib.suppress(Exception):
                asyncio.run(_delete_topics(bootstrap, list(topic_configs(settings))))


def run(args: argparse.Namespace) -> Report:
    report = Report(
        "gateway",
        DESCRIPTION,
        params={
            "requests": args.requests,
            "batch": args.batch,
            "concurrency": args.concurrency,
            "partitions": args.partitions,
            "gzip": args.gzip,
            "producer": _PRODUCER,
        },
    )
    # The first body warms up each side, untimed.
    payloads = bodies(args.requests + 1, args.batch)
    warm_up, records = expected_records(payloads[:1])[0], expected_records(payloads[1:])
    with broker() as bootstrap:
        report.params["broker"] = (
            "KAFKA_BOOTSTRAP_SERVERS" if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") else "LocalKafka"
        )
        direct_samples = []
        for _ in range(args.runs):
            report.samples.append(_run_once(bootstrap, args, payloads))
            settings = _settings(bootstrap, args.partitions)
            try:
                straight = direct(settings, warm_up, records, args.concurrency)
                direct_samples.append(asyncio.run(straight))
            finally:
                with contextlib.suppress(Exception):
                    asyncio.run(_delete_topics(bootstrap, list(topic_configs(settings))))
    requests = statistics.median(s.extra["requests_per_s"] for s in report.samples)
    straight = statistics.median(s.rate for s in direct_samples)
    report.notes += [
        f"requests/s (median): {requests:,.0f} with {args.batch} messages each",
        "latency per request (median of runs): p50 "
        f"{statistics.median(s.extra['p50_ms'] for s in report.samples):.0f} ms, p99 "
        f"{statistics.median(s.extra['p99_ms'] for s in report.samples):.0f} ms",
        f"same records straight to Kafka: {straight:,.0f} events/s (median; runs "
        + ", ".join(f"{s.rate:,.0f}" for s in direct_samples)
        + ")",
        f"ratio gateway / straight to Kafka: {report.median / straight:.2f}",
    ]
    return report
