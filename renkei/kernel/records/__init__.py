"""Access records (アクセス記録): tamper-evident, kept by every party to a linkage.

Each linkage attempt leaves one record with the requester (under the requester's code for the
subject), one with the hub (under the hub's subject id) and, once the request reaches it, one
with the provider (under the provider's code). Every party's records form a hash chain: each
record carries its position in the keeper's chain, the hash of the keeper's previous record and
its own hash over all its fields. The table is append-only (a trigger refuses UPDATE, TRUNCATE
and any DELETE before the retention period), and :func:`checkpoint` signs the head of every
chain, so :func:`verify` finds a changed, deleted, inserted or reordered record, and a chain
cut short after a checkpoint.

What became of an attempt (provided, no answer, failed, cancelled) is not known when the hub
decides it: the hub appends it later, once, to its own chain of outcomes (:func:`record_outcome`),
``provided`` only on the provider's signed receipt, which it collects itself from the provider's
own receipts (:class:`Collector`). The provider keeps its receipt of each attempt it answered
(:func:`keep_receipt`); :func:`reconcile` compares the two.

The attempt key is ``workflow id / run id / step id``; a retried activity presents the same key
and finds its record already written, so every attempt leaves exactly one record per keeper.

With ``records_chaining = deferred`` a linkage writes its records unchained
(:func:`append_unchained`: its content hash signed by its writer, no chain lock) and each
keeper's :class:`Chainer`, in the keeper's own worker, links them behind in batches
(:func:`chain_pending`); :func:`verify` checks both signatures and reports a record left
unchained too long.
"""

from __future__ import annotations

from renkei.kernel.records._chain import (
    COLUMNS,
    GENESIS,
    HUB,
    AccessRecord,
    Conn,
    RecordSigner,
    append,
    append_unchained,
    append_unchained_many,
    chain_pending,
    entry_hash,
    lock_chain,
    lock_platform,
    may_chain,
    may_write,
    query,
    record_hash,
    write,
)
from renkei.kernel.records._chainer import CHAIN_INTERVAL, Chainer, Chainers
from renkei.kernel.records._collector import COLLECT_INTERVAL, Collected, Collector, collect_batch
from renkei.kernel.records._outcomes import (
    OUTCOMES,
    OUTCOMES_LOCK,
    AttemptOutcome,
    Outcome,
    collect_outcomes,
    outcome_hash,
    outcome_of,
    outcomes,
    receipt_problem,
    record_outcome,
    record_outcomes,
)
from renkei.kernel.records._receipts import (
    Mismatch,
    ProviderReceipt,
    ReceiptGroup,
    keep_receipt,
    keep_receipts,
    receipt_holds,
    receipts,
    reconcile,
)
from renkei.kernel.records._witness import (
    UNCHAINED_BOUND,
    Break,
    Checkpoint,
    Head,
    PartyKey,
    Verification,
    checkpoint,
    heads,
    key_id,
    keyring,
    outcome_problem,
    record_problem,
    revocation_message,
    revocations,
    verify,
    verify_outcomes,
    witnesses,
)
from renkei.kernel.records._writer import GroupWriter

__all__ = [
    "CHAIN_INTERVAL",
    "COLLECT_INTERVAL",
    "COLUMNS",
    "GENESIS",
    "HUB",
    "OUTCOMES",
    "OUTCOMES_LOCK",
    "UNCHAINED_BOUND",
    "AccessRecord",
    "AttemptOutcome",
    "Break",
    "Chainer",
    "Chainers",
    "Checkpoint",
    "Collected",
    "Collector",
    "Conn",
    "GroupWriter",
    "Head",
    "Mismatch",
    "Outcome",
    "PartyKey",
    "ProviderReceipt",
    "ReceiptGroup",
    "RecordSigner",
    "Verification",
    "append",
    "append_unchained",
    "append_unchained_many",
    "chain_pending",
    "checkpoint",
    "collect_batch",
    "collect_outcomes",
    "entry_hash",
    "heads",
    "keep_receipt",
    "keep_receipts",
    "key_id",
    "keyring",
    "lock_chain",
    "lock_platform",
    "may_chain",
    "may_write",
    "outcome_hash",
    "outcome_of",
    "outcome_problem",
    "outcomes",
    "query",
    "receipt_holds",
    "receipt_problem",
    "receipts",
    "reconcile",
    "record_hash",
    "record_outcome",
    "record_outcomes",
    "record_problem",
    "revocation_message",
    "revocations",
    "verify",
    "verify_outcomes",
    "witnesses",
    "write",
]
