"""Errors a client can act on: an HTTP status and one sentence, sent as ``{"error": ...}``."""

from __future__ import annotations


class ApiError(Exception):
    """A request the server refuses: ``status`` (4xx, or 5xx for the server's own trouble)
    and a message that says what to change."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def payload(self) -> dict:
        return {"status": self.status, "error": self.message}
