"""Run one Faust worker process: ``python -m streams.worker [options]`` or ``fuelcard stream worker``.

Stops gracefully on SIGTERM/SIGINT (it leaves its consumer group, which matters on noida-db: a member that
dies without leaving is never evicted).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from streams.app import StreamConfig, create_app
from streams.directory import CardDirectory
from streams.engine import load_engine
from streams.sinks import make_sink


def credentials_from_settings(settings):  # type: ignore[no-untyped-def]
    """Faust broker credentials for SASL/TLS production clusters (None for PLAINTEXT)."""
    import faust

    proto = settings.kafka_security_protocol
    if proto == "PLAINTEXT":
        return None
    ssl_context = None
    if proto in ("SSL", "SASL_SSL"):
        import ssl

        ssl_context = ssl.create_default_context()
    if proto.startswith("SASL"):
        pw = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
        return faust.SASLCredentials(username=settings.kafka_sasl_username, password=pw,
                                     mechanism=settings.kafka_sasl_mechanism or "PLAIN", ssl_context=ssl_context)
    return faust.SSLCredentials(ssl_context)


def build_config(args: argparse.Namespace) -> StreamConfig:
    """StreamConfig from parsed worker arguments and the environment's Settings."""
    from fuelcard.settings import load_settings

    settings = load_settings()
    return StreamConfig(
        broker_url=args.broker or settings.kafka_bootstrap,
        prefix=args.prefix,
        app_id=args.app_id,
        engine=load_engine(artifacts_dir=args.artifacts or getattr(settings, "registry_dir", settings.artifacts_dir)),
        directory=CardDirectory.from_dir(args.directory),
        sink=make_sink(args.sink),
        agents=frozenset(a.strip() for a in args.agents.split(",") if a.strip()),
        take_max=args.take_max,
        take_within_s=args.take_within,
        broker_credentials=credentials_from_settings(settings),
        trace=os.environ.get("FUELCARD_STREAM_TRACE") == "1",  # entry point: may read the environment
        shard=_shard(args.shard),
        direct_port=args.direct_port,
    )


def _shard(spec: str | None) -> tuple[int, int] | None:
    """``"i/N"`` → (i, N)."""
    if not spec:
        return None
    i, n = (int(x) for x in spec.split("/"))
    if not 0 <= i < n:
        raise ValueError(f"bad --shard {spec!r}")
    return i, n


def parser() -> argparse.ArgumentParser:
    """Command-line options of a worker process."""
    p = argparse.ArgumentParser(prog="streams.worker")
    p.add_argument("--broker", default=None, help="faust broker URL (default FUELCARD_KAFKA_BOOTSTRAP)")
    p.add_argument("--prefix", default="fuelcard")
    p.add_argument("--app-id", default="fuelcard-stream")
    p.add_argument("--agents", default="risk,points,sink")
    p.add_argument("--directory", default=None, help="simulator output dir with cards/members parquet")
    p.add_argument("--sink", default="null", help="null | jsonl:DIR[::tag] | warehouse:URL")
    p.add_argument("--artifacts", default=None, help="model registry root (default: the settings' registry_dir)")
    p.add_argument("--take-max", type=int, default=256)
    p.add_argument("--take-within", type=float, default=0.004)
    p.add_argument("--loglevel", default="WARNING")
    p.add_argument("--loop", choices=("uvloop", "aio"), default="uvloop")
    p.add_argument("--direct-port", type=int, default=None,
                   help="serve direct decisions for the risk API on 127.0.0.1:PORT")
    p.add_argument("--shard", default=None, help="i/N: static ownership of authorisation partitions p%%N == i")
    return p


def run(argv: list[str] | None = None) -> None:
    """Build the app and run a Faust worker until SIGTERM."""
    import faust

    args = parser().parse_args(argv)
    if args.loop == "uvloop":
        import mode.loop

        mode.loop.use("uvloop")  # libuv event loop: the agents are dominated by event-loop overhead
    if args.sink.startswith("jsonl:") and "::" not in args.sink:
        args.sink = f"{args.sink}::{os.getpid()}"
    cfg = build_config(args)
    sa = create_app(cfg)
    logging.basicConfig(level=args.loglevel)
    Path(os.environ.get("FUELCARD_WORKER_PIDFILE", os.devnull)).write_text(str(os.getpid()))
    level = getattr(logging, str(args.loglevel).upper(), logging.WARNING)

    class _Worker(faust.Worker):  # type: ignore[misc]
        def on_setup_root_logger(self, logger: logging.Logger, level_: int) -> None:
            super().on_setup_root_logger(logger, level_)
            # aiokafka/faust debug records cost ~0.3 ms per produced message even when nothing prints them.
            for name in ("aiokafka", "faust", "mode", "kafka"):
                logging.getLogger(name).setLevel(max(level, logging.INFO))

    worker = _Worker(sa.app, loglevel=args.loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    run(sys.argv[1:])
