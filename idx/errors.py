"""Errors idx raises for user-facing problems.

Every error says what failed, on which input, and what to do next. The CLI turns an
``IdxError`` into a one-line ``Error: ...`` and a non-zero exit status.
"""


class IdxError(Exception):
    """Base class of every user-facing idx error."""


class ImageError(IdxError):
    """An image file is missing, unreadable, corrupt, or of an unusable size."""


class WeightsError(IdxError):
    """Model weights are missing, truncated or do not match the network."""


class ArticleError(IdxError):
    """An article file or response cannot be read."""


class CrawlError(IdxError):
    """A network request failed after retries."""


class DatabaseError(IdxError):
    """A database is not SQLite, is locked, read-only, or a query is invalid."""
