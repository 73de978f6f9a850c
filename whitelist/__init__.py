"""The whitelist: catalog of orgs, roles, tasks and info items, the legal rows, and the decision.

Only this package decides whether a linkage is permitted. Everything else asks it.
"""

from whitelist.decide import Decision, WhitelistIndex
from whitelist.models import Catalog, InfoItem, Org, Role, Task, WhitelistRow

__all__ = [
    "Catalog",
    "Decision",
    "InfoItem",
    "Org",
    "Role",
    "Task",
    "WhitelistIndex",
    "WhitelistRow",
]
