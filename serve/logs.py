"""Client errors are the client's business: log them as one warning line, not as a server error with a traceback.

BentoML logs every exception an endpoint raises, a 400 for a malformed body included, with `logger.error(...,
exc_info=True)` on its HTTP app's logger. The filter below keeps those records but, when the exception is a
client error (a pydantic validation error, or a BentoML exception with a 4xx code), turns them into one WARNING
line that says what was wrong; server errors keep their level and traceback.
"""

from __future__ import annotations

import logging

from bentoml.exceptions import BentoMLException
from pydantic import ValidationError

# The logger that BentoML's HTTP app reports endpoint exceptions on.
BENTOML_HTTP_LOGGER = "bentoml._internal.server.http_app"


def is_client_error(error: BaseException | None) -> bool:
    """Whether an exception means a bad request (4xx) rather than a failure of the server."""
    if isinstance(error, ValidationError):
        return True
    return isinstance(error, BentoMLException) and 400 <= error.error_code.value < 500


class ClientErrorsAsWarnings(logging.Filter):
    """Rewrite records of client errors as one warning line without a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if is_client_error(error):
            summary = " ".join(str(error).split())  # pydantic's messages span several lines
            record.msg, record.args = f"client error: {record.getMessage()}: {summary}", ()
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True


def log_client_errors_as_warnings() -> None:
    """Install the filter on BentoML's HTTP app logger (once per process)."""
    logger = logging.getLogger(BENTOML_HTTP_LOGGER)
    if not any(isinstance(f, ClientErrorsAsWarnings) for f in logger.filters):
        logger.addFilter(ClientErrorsAsWarnings())
