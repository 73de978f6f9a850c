"""Everything that crosses Temporal: the workflow's input and result, every activity message,
activity and task-queue names, failure types and retry policies.

Workflows, activities, workers, the client and the HTTP layer all name these once, here, so a
rename is one change and a type error rather than a runtime surprise.
"""
