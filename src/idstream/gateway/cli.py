"""`idstream gateway`: the Segment/RudderStack-compatible tracking API in front of Kafka.

Entry point. Creates the topics as `idstream worker` does, connects an acks=all producer,
then serves until SIGTERM or Ctrl-C (requests in flight are finished first). Exit code 2:
bad settings or TLS files; 1: Kafka could not be reached at start-up.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl

    from idstream.gateway.config import GatewayConfig
    from idstream.settings import Settings

READY_LINE = "gateway listening on"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", help="settings file (TOML or JSON); IDSTREAM_* win")
    parser.add_argument("--host", help="address to bind (default: IDSTREAM_GATEWAY_HOST)")
    parser.add_argument("--port", type=int, help="port (default: IDSTREAM_GATEWAY_PORT)")
    parser.add_argument("--tls-cert", help="PEM certificate chain: serve HTTPS")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument("--log-level", default="info", help="debug, info, warning, error")


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from idstream.errors import IdstreamError
    from idstream.gateway.config import GatewayConfig
    from idstream.settings import load_settings

    logging.basicConfig(
        level=args.log_level.upper(), format="[%(asctime)s] [%(levelname)s] %(name)s: %(message)s"
    )
    if (args.tls_cert is None) != (args.tls_key is None):
        print("idstream gateway: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    try:
        settings = load_settings(args.settings)
        config = GatewayConfig.from_settings(settings)
        ssl_context = _ssl_context(args.tls_cert, args.tls_key)
    except (IdstreamError, OSError, ValueError) as exc:
        print(f"idstream gateway: {exc}", file=sys.stderr)
        return 2
    host = args.host or settings.gateway_host
    port = settings.gateway_port if args.port is None else args.port
    try:
        asyncio.run(_serve(settings, config, host, port, ssl_context))
    except KeyboardInterrupt:
        pass
    except IdstreamError as exc:
        print(f"idstream gateway: {exc}", file=sys.stderr)
        return 1
    return 0


def _ssl_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if cert is None or key is None:
        return None
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def _serve(
    settings: Settings,
    config: GatewayConfig,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
) -> None:
    import asyncio
    import logging
    import signal

    from aiohttp import web
    from aiokafka.errors import KafkaError

    from idstream.errors import BrokerUnavailableError
    from idstream.gateway.kafka import KafkaSink
    from idstream.gateway.server import RUNNER_OPTIONS, create_app

    logger = logging.getLogger("idstream.gateway")
    sink = KafkaSink(settings, config.produce_timeout_s, config.max_pending_bytes)
    try:
        await sink.start()
    except KafkaError as exc:
        raise BrokerUnavailableError(
            f"Kafka at {settings.bootstrap_servers} not usable: {exc!r}"
        ) from exc
    runner = web.AppRunner(create_app(config, sink), **RUNNER_OPTIONS)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        scheme = "https" if ssl_context is not None else "http"
        logger.info("%s %s://%s:%s", READY_LINE, scheme, host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        logger.info("stopping: finishing requests in flight")
    finally:
        # Stops accepting, lets requests in flight end, then the producer flushes.
        await runner.cleanup()
        await sink.stop()
