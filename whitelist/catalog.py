"""Loading the catalog (roles, tasks, info items, orgs) from the data files."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from whitelist.models import Action, Catalog, InfoItem, Org, Role, Task
from whitelist.payloads import SCHEMAS

DATA_DIR = Path(__file__).parent / "data"


def read_yaml(path: Path) -> Any:
    """Read a YAML file with the safe loader."""
    return YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))


def load_catalog(data_dir: Path = DATA_DIR) -> Catalog:
    """Load and cross-check the catalog: every id an org or schema names must exist."""
    cat = data_dir / "catalog"
    roles = {r["id"]: Role(**r) for r in read_yaml(cat / "roles.yaml")}
    tasks = {
        t["id"]: Task(**t)
        for name in ("tasks.yaml", "tasks-local.yaml")
        for t in read_yaml(cat / name)
    }
    schemas: dict[str, str] = read_yaml(cat / "info-schemas.yaml")
    # An ordinance-level item carries its category's payload unless it names its own.
    infos = {
        i["id"]: InfoItem(
            **i,
            schema_name=schemas.get(i["id"], schemas.get(i.get("parent") or "", "GenericRecord")),
        )
        for name in ("info-items-annex2.yaml", "info-items-local.yaml")
        for i in read_yaml(cat / name)
    }
    orgs = {o["id"]: Org(**o) for o in read_yaml(cat / "orgs.yaml")}
    actions_file = cat / "actions.yaml"
    actions = (
        {a["id"]: Action(**a) for a in read_yaml(actions_file)} if actions_file.exists() else {}
    )
    problems = [f"info-schemas.yaml: unknown info item {i!r}" for i in schemas if i not in infos]
    problems += [
        f"{i.id}: parent {i.parent!r} is not a statutory info item"
        for i in infos.values()
        if i.parent is not None and (i.parent not in infos or infos[i.parent].parent is not None)
    ]
    problems += [
        f"info-schemas.yaml: unknown schema {s!r}" for s in schemas.values() if s not in SCHEMAS
    ]
    for org in orgs.values():
        problems += [
            f"orgs.yaml: {org.id}: unknown role {r!r}" for r in org.roles if r not in roles
        ]
        problems += [
            f"orgs.yaml: {org.id}: unknown info {i!r}" for i in org.serves if i not in infos
        ]
    problems += [f"actions.yaml: {a}: also an info item id" for a in actions if a in infos]
    for action in actions.values():
        problems += [
            f"actions.yaml: {action.id}: unknown schema {s!r}"
            for s in (action.request, action.result)
            if s not in SCHEMAS
        ]
    for org in orgs.values():
        problems += [
            f"orgs.yaml: {org.id}: unknown action {a!r}" for a in org.acts if a not in actions
        ]
        if org.kind == "private" and org.serves:
            problems.append(f"orgs.yaml: {org.id}: a private org serves no info item")
    if problems:
        raise ValueError("catalog is inconsistent:\n  " + "\n  ".join(problems))
    return Catalog(roles=roles, tasks=tasks, info_items=infos, orgs=orgs, actions=actions)


@cache
def default_catalog() -> Catalog:
    """The catalog shipped with the project (loaded once per process)."""
    return load_catalog()
