"""Stub providers: the orgs as a scenario scripts them, in place of their real systems.

Each stub does what the scenario's :class:`~renkei.app.kit.scenarios.Behaviour` says for its info
item (answer, no match, fail always or a number of times, after an optional delay); every
scripted answer, with its symbolic subjects resolved to the answering org's codes, must fit the
item's schema, whether or not the flow asks for it.

A stub stands in only for an item its org is registered to serve (``serves`` in the catalog): a
scenario that scripts an org answering for anything else fails, and no stub answers for it, so a
version whose flow asks an org for what it does not serve fails in the kit as it would in
operation, not on its first real run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from activities.linkage import Provider
from renkei.app.kit.clock import StubClock
from renkei.app.kit.scenarios import Behaviour, Scenario
from renkei.bpf.models import did_you_mean
from renkei.contracts.failures import Failure
from renkei.contracts.messages import LinkageRequest
from whitelist.models import Catalog
from whitelist.payloads import SCHEMAS, GenericRecord


class Stubs:
    """Stub providers for one scenario; answers are validated against the item's schema."""

    def __init__(
        self,
        scenario: Scenario,
        catalog: Catalog,
        code_at: Callable[[str, str], str],
        clock: StubClock | None = None,
    ) -> None:
        self.scenario = scenario
        self.clock = clock
        self.catalog = catalog
        self.code_at = code_at
        self.calls: dict[tuple[str, str], int] = {}
        self.problems: list[str] = []

    def _answer(self, org: str, info: str, body: dict[str, Any]) -> BaseModel:
        action = self.catalog.actions.get(info)  # an act's receipt, or an item's answer
        name = action.result if action else self.catalog.info_items[info].schema_name
        schema = SCHEMAS.get(name, GenericRecord)

        def resolve(node: Any) -> Any:
            if isinstance(node, str) and node.startswith("@"):
                return self.code_at(node[1:], org)
            if isinstance(node, dict):
                return {k: resolve(v) for k, v in node.items()}
            if isinstance(node, list):
                return [resolve(v) for v in node]
            return node

        return schema.model_validate(resolve(body))

    def serves(self, org: str, info: str) -> bool:
        """Whether ``org`` is registered to serve ``info`` (or carry out the action ``info``):
        only then may a stub answer."""
        found = self.catalog.orgs.get(org)
        return found is not None and (info in found.serves or info in found.acts)

    def providers(self, org: str) -> dict[str, Provider]:
        return {
            info: self._stub(org, info, behaviour)
            for info, behaviour in self.scenario.providers.get(org, {}).items()
            if self.serves(org, info)
        }

    def _stub(self, org: str, info: str, b: Behaviour) -> Provider:
        async def stub(req: LinkageRequest) -> BaseModel:
            n = self.calls[(org, info)] = self.calls.get((org, info), 0) + 1
            if self.clock is not None:  # answers when the kit lets it, after its delay
                await self.clock.delay(b.delay or dt.timedelta(0), f"{req.step}/{org}/{info}")
            elif b.delay:
                await asyncio.sleep(b.delay.total_seconds())
            if b.fail == "always" or (isinstance(b.fail, int) and n <= b.fail):
                raise Failure.PROVIDER_ERROR.error(
                    f"{org} failed (scenario)", non_retryable=b.fail == "always"
                )
            if b.no_match:
                raise Failure.NO_MATCH.error(f"{org} holds no {info} for this subject")
            return self._answer(org, info, b.respond or {})

        return stub

    def check_answers(self) -> None:
        """Every scripted answer must fit its item's schema, even if the flow never asks."""
        for org, items in self.scenario.providers.items():
            for info, b in items.items():
                if info not in self.catalog.info_items and info not in self.catalog.actions:
                    self.problems.append(
                        f"providers.{org}.{info}: no such info item"
                        + did_you_mean(info, self.catalog.info_items)
                    )
                    continue
                if not self.serves(org, info):
                    servers = self.catalog.servers_of(info) or self.catalog.actors_of(info)
                    self.problems.append(
                        f"providers.{org}.{info}: {org} is not registered to serve {info} (the"
                        " catalog's `serves`), so no stub stands in for it (served by:"
                        f" {', '.join(servers) or 'no org'})"
                    )
                    continue
                if b.respond is not None:
                    try:
                        self._answer(org, info, b.respond)
                    except ValidationError as err:
                        self.problems.append(
                            f"providers.{org}.{info}: the answer does not fit the schema: "
                            + "; ".join(e["msg"] for e in err.errors())
                        )
