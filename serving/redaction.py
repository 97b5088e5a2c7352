"""No sensitive data in the server's text log: a logging filter that passes
every record's message through `autoroute.signals.redact` (the same
redaction as the decision log and the error messages)."""
from __future__ import annotations

import logging

from autoroute.signals import redact


class RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        safe = redact(msg)
        if safe != msg:
            record.msg, record.args = safe, None
        if record.exc_info and record.exc_info[1] is not None:
            text = redact(str(record.exc_info[1]))
            if text != str(record.exc_info[1]):
                record.exc_text = f"{type(record.exc_info[1]).__name__}: {text}"
                record.exc_info = None
        return True


def install() -> None:
    """Attach the filter to every handler of the root logger and of the named loggers (idempotent)."""
    loggers = [logging.getLogger()] + [lg for lg in logging.root.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for h in lg.handlers:
            if not any(isinstance(f, RedactFilter) for f in h.filters):
                h.addFilter(RedactFilter())
