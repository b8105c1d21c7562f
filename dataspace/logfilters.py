"""Keep credentials out of request logs.

Tokens in a query string are refused (RFC 6750 §5.3, django-oauth-toolkit's
``COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT``), but the ASGI server logs the request line
before the service refuses it, so a client that sends ``?access_token=...`` anyway would leave
a usable token in the access log. This filter masks the values of credential-bearing query
parameters in the access logs of uvicorn and of ``runserver`` before any handler writes them.
"""

from __future__ import annotations

import logging
import re

SECRET_PARAMETERS = re.compile(
    r"(?P<name>(?:access_token|refresh_token|id_token|token|code|device_code|user_code|"
    r"client_secret|password)=)[^&\s\"']*",
    re.IGNORECASE,
)
REDACTED = "[redacted]"
REQUEST_LOGGERS = ("uvicorn.access", "django.server", "django.request")


def redact(text: str) -> str:
    return SECRET_PARAMETERS.sub(lambda m: m.group("name") + REDACTED, text)


class RedactSecrets(logging.Filter):
    """Masks credential query parameters in a record's message and its string arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def install() -> None:
    """Attach the filter to the request loggers (their handlers are left as configured)."""
    for name in REQUEST_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
