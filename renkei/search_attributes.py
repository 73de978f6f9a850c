"""The search attributes renkei puts on every run, for operators. Never personal data."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

BPF = SearchAttributeKey.for_keyword("RenkeiBpf")
BPF_VERSION = SearchAttributeKey.for_int("RenkeiBpfVersion")
EXECUTOR = SearchAttributeKey.for_keyword("RenkeiExecutor")
TRIGGER = SearchAttributeKey.for_keyword("RenkeiTrigger")
STATUS = SearchAttributeKey.for_keyword("RenkeiStatus")

ALL = (BPF, BPF_VERSION, EXECUTOR, TRIGGER, STATUS)
