"""Logging of `ikev2lib run`: the classic text lines, or `--log-format json`, one JSON object per line
for log shippers (Loki, Elasticsearch, journald's JSON mode).

A JSON line holds `time` (ISO 8601, UTC, milliseconds), `level`, `logger`, `message`, and every field a
log call passes with `extra=` (`connection`, `ike_sa_id`, `event`, ...), plus `exception` with the
traceback when there is one. Key material never reaches a log call (events keep their ESP SAs out of
`repr`), and this module adds none.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import TextIO

__all__ = ["LOG_FORMATS", "JsonFormatter", "TEXT_FORMAT", "setup_logging"]

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(message)s"

# what every LogRecord has: the rest of its attributes came from `extra=`
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))) | {
    "message", "asctime", "taskName",
}


def _plain(value: object) -> object:
    """A value json can write as it is; anything else (bytes, enums, objects) as its str()."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines inside strings are escaped by json)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and key not in entry:
                entry[key] = _plain(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: int | str = logging.INFO, fmt: str = "text", stream: TextIO | None = None) -> None:
    """Send every log record at `level` and above to `stream` (stdout) as `fmt` ("text" or "json").
    Replaces the root logger's handlers, so calling it again switches the format."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
