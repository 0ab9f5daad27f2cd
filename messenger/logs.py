"""Process-wide logging: plain text for people, JSON lines (`LOG_FORMAT=json`) for collectors."""

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from messenger.settings import Settings


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stdout)
    if settings.log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # Our access log replaces uvicorn's; its error log stays.
    logging.getLogger("uvicorn.access").disabled = True
    # httpx logs every Consul agent call at INFO; the discovery log reports what changed.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # aiormq logs every failed connection attempt as an error; the relay logs the outage once.
    logging.getLogger("aiormq.connection").setLevel(logging.CRITICAL)
