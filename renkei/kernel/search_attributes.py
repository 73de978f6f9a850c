"""The search attributes renkei puts on every run, for operators. Never personal data."""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.common import SearchAttributeKey

BPF = SearchAttributeKey.for_keyword("RenkeiBpf")
BPF_VERSION = SearchAttributeKey.for_int("RenkeiBpfVersion")
# The content hash of the definition a run pinned (the registry's, public: what the run does,
# nobody's data). Runs started before it was set carry the pin in their memo ("definition").
CONTENT_HASH = SearchAttributeKey.for_keyword("RenkeiContentHash")
EXECUTOR = SearchAttributeKey.for_keyword("RenkeiExecutor")
TRIGGER = SearchAttributeKey.for_keyword("RenkeiTrigger")
STATUS = SearchAttributeKey.for_keyword("RenkeiStatus")
WAITING_FOR = SearchAttributeKey.for_keyword("RenkeiWaitingFor")
DEADLINE = SearchAttributeKey.for_datetime("RenkeiDeadline")
# Set ("kit") on the conformance kit's runs only: `renkei runs` and the UI's default view
# (`RenkeiConformance IS NULL`) leave them out. A run that is not the kit's drops it.
CONFORMANCE = SearchAttributeKey.for_keyword("RenkeiConformance")
KIT = "kit"

ALL = (
    BPF,
    BPF_VERSION,
    CONTENT_HASH,
    EXECUTOR,
    TRIGGER,
    STATUS,
    WAITING_FOR,
    DEADLINE,
    CONFORMANCE,
)


async def ensure_registered(client: Client, namespace: str) -> list[str]:
    """Register any of renkei's search attributes the server lacks; return those added.

    The embedded dev server gets them on its command line; an existing cluster gets them here.
    """
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    missing = {
        k.name: IndexedValueType.ValueType(int(k.indexed_value_type))
        for k in ALL
        if k.name not in existing.custom_attributes
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
    return sorted(missing)
