"""Errors the server turns into HTTP responses: a status code and a one-line message."""

from __future__ import annotations

from tapkit.errors import UserError


class ServeError(UserError):
    """A client's mistake, answered with `status_code` and the message."""

    status_code = 422


class PayloadTooLarge(ServeError):
    status_code = 413


class UnsupportedImage(ServeError):
    status_code = 415


class UnreadableImage(ServeError):
    status_code = 422


class UnknownImage(ServeError):
    status_code = 404

    def __init__(self, image_id: str):
        super().__init__(f"unknown image id '{image_id}': never uploaded, deleted, or evicted from the cache (upload it again)")


class NotAvailable(ServeError):
    status_code = 501


class ModelFailure(Exception):
    """The model raised while serving a request: a bug or a resource problem, not the
    client's fault. The client gets a 500 without details; the log gets the traceback."""
