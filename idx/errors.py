"""Errors idx raises for user-facing problems.

Every error says what failed, on which input, and what to do next. The CLI turns an
``IdxError`` into a one-line ``Error: ...`` and a non-zero exit status.
"""
from __future__ import annotations

import sys


class IdxError(Exception):
    """Base class of every user-facing idx error."""


class ImageError(IdxError):
    """An image file is missing, unreadable, corrupt, or of an unusable size."""


class WeightsError(IdxError):
    """Model weights are missing, truncated or do not match the network."""


class ArticleError(IdxError):
    """An article file or response cannot be read."""


class CrawlError(IdxError):
    """A network request failed after retries.

    Errors of one request (``miners.http.HttpClient``) say what failed in attributes, so callers
    never read the message to decide what to do; other crawl errors leave them at their defaults.

    Attributes
    ----------
    kind : str or None
        ``"HTTP 404"``, ``"HTTP 503"``, ``"timeout"``, ``"truncated body"``, ``"connection error"``,
        ``"not an image"``, ``"wrong content type"``, ``"too large"``, ``"bad redirect"``,
        ``"forbidden URL"``...; None when the error is not about one request.
    status : int or None
        The HTTP status the server answered, if the error is one.
    permanent : bool
        True when asking again later is pointless (404 and most 4xx, wrong type, too large,
        redirect loop, forbidden host); False for what may pass (timeouts, 429, 5xx, cut bodies).
    """

    def __init__(self, message: str = "", *, kind: str | None = None, status: int | None = None,
                 permanent: bool = False):
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.permanent = bool(permanent)

    def __reduce__(self):  # keep the attributes through pickling (worker processes)
        return _make_crawl_error, (type(self), str(self), self.kind, self.status, self.permanent)


def _make_crawl_error(cls, message, kind, status, permanent):
    return cls(message, kind=kind, status=status, permanent=permanent)


class DatabaseError(IdxError):
    """A database is not SQLite, is locked, read-only, or a query is invalid."""


def run_module(main, argv=None) -> None:
    """Run a ``python -m`` entry point as the ``idx`` CLI runs its commands: an :class:`IdxError`
    ends it with one ``Error: ...`` line on stderr and exit status 1, not a traceback."""
    try:
        main(argv)
    except IdxError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("Error: interrupted; everything stored so far is kept", file=sys.stderr)
        raise SystemExit(130) from None
