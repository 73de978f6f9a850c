"""Hub activities, run by the control worker: resolve a run's definition, translate codes.

Both run as local activities of the interpreter workflow: they are cheap lookups, and their
results land in the run's history as markers, so a replay sees exactly what the run saw.
"""

from __future__ import annotations

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.models import Pin, ResolvedRun, ResolveRequest, TranslateRequest
from renkei.pseudonyms import Pseudonyms, UnknownSubject
from whitelist.models import Catalog
from workflows import registry
from workflows.inputs import InputError, check_subject_code, validate_inputs
from workflows.models import QueryStep, walk


class HubActivities:
    """The hub's activities; one instance per control worker."""

    def __init__(
        self, pool: asyncpg.Pool, catalog: Catalog, pseudonyms: Pseudonyms, task_queue_prefix: str
    ) -> None:
        self._pool = pool
        self._catalog = catalog
        self._pseudonyms = pseudonyms
        self._prefix = task_queue_prefix

    @activity.defn(name="hub.resolve")
    async def resolve(self, req: ResolveRequest) -> ResolvedRun:
        """The registered definition to run, after checking who runs it and with what inputs."""
        found = await registry.fetch(self._pool, req.bpf, req.version)
        if found is None:
            raise ApplicationError(
                f"{req.bpf} version {req.version or 'latest'} is not registered",
                type="UnknownBpf",
                non_retryable=True,
            )
        d = found.definition
        roles = self._catalog.org_roles(req.executor)
        allowed = req.executor in d.owners.executors or any(
            e.startswith("role:") and e.removeprefix("role:") in roles for e in d.owners.executors
        )
        if not allowed:
            raise ApplicationError(
                f"{req.executor} is not an executor of {d.bpf} (executors: "
                f"{', '.join(d.owners.executors)})",
                type="NotAnExecutor",
                non_retryable=True,
            )
        try:
            check_subject_code(req.subject)
            inputs = validate_inputs(d, req.inputs, self._catalog)
        except InputError as err:
            raise ApplicationError(
                f"invalid start inputs: {err}", type="InvalidInputs", non_retryable=True
            ) from None
        schemas = {
            s.query.info: self._catalog.info_items[s.query.info].schema_name
            for s in walk(d.steps)
            if isinstance(s, QueryStep)
        }
        return ResolvedRun(
            pin=Pin(bpf=d.bpf, version=d.version, content_hash=found.content_hash),
            definition=d,
            info_schemas=schemas,
            inputs=inputs,
            task_queue_prefix=self._prefix,
            executor_roles=sorted(roles),
        )

    @activity.defn(name="hub.translate")
    async def translate(self, req: TranslateRequest) -> list[str]:
        """Translate codes from one org's code space into another's."""
        try:
            return await self._pseudonyms.translate(req.from_org, req.codes, req.to_org)
        except UnknownSubject as err:
            raise ApplicationError(str(err), type="UnknownSubject", non_retryable=True) from None
