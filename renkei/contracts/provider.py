"""What an agency writes to serve an info item: a provider function, no Temporal in sight.

A provider receives the :class:`~renkei.contracts.messages.LinkageRequest` the whitelist gate
has already admitted (``subject`` is the org's own code for the person) and returns the item's
typed payload (a pydantic model from :mod:`whitelist.payloads`). When the org holds nothing for
the subject it raises :class:`NoMatch`: an answer, not an outage, so the linkage activity turns
it into a non-retryable ``NoMatch`` failure. Any other exception is an outage and is retried as
the step's ``retry:`` says.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pydantic import BaseModel

from renkei.contracts.messages import LinkageRequest

Provider = Callable[[LinkageRequest], Awaitable[BaseModel]]


class NoMatch(LookupError):
    """The provider holds no record of ``info`` for the subject (retrying cannot change it)."""

    def __init__(self, org: str, info: str) -> None:
        super().__init__(f"{org} holds no {info} for this subject")
        self.org = org
        self.info = info
