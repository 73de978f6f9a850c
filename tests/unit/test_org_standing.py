"""An org's roles on a date, its standing, and the private kind (docs/participants.md)."""

from __future__ import annotations

import datetime as dt

from whitelist.annex2 import load_annex2
from whitelist.catalog import default_catalog
from whitelist.decide import JST, WhitelistIndex, decide_linkage
from whitelist.models import Held, Org
from whitelist.orgs import LiveOrgs, standing_refusal

CATALOG = default_catalog()
INDEX = WhitelistIndex(load_annex2(CATALOG))
APRIL = dt.date(2027, 4, 1)


def _at(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(10), JST)


def _with(*orgs: Org) -> LiveOrgs:
    live = LiveOrgs(CATALOG.orgs)
    live.replace({**CATALOG.orgs, **{o.id: o for o in orgs}})
    return live


def _asks(orgs: LiveOrgs, provider: str, day: dt.date) -> bool:
    catalog = CATALOG.model_copy(update={"orgs": orgs})
    return decide_linkage(
        catalog, INDEX, "city-minato", provider, "child-allowance", "local-tax", _at(day)
    ).allowed


def test_a_role_counts_from_its_first_day_and_not_on_its_end() -> None:
    town = Org(
        id="town-a",
        ja="町",
        en="Town",
        kind="municipal",
        roles=(),
        held=(Held(id="municipal-mayor", valid_from=APRIL, valid_to=dt.date(2028, 4, 1)),),
    )
    live = _with(town)
    assert not _asks(live, "town-a", APRIL - dt.timedelta(days=1))
    assert _asks(live, "town-a", APRIL)
    assert not _asks(live, "town-a", dt.date(2028, 4, 1))


def test_a_private_org_is_never_a_requester_nor_a_provider() -> None:
    shop = Org(id="shop-a", ja="店", en="Shop", kind="private", roles=("municipal-mayor",))
    catalog = CATALOG.model_copy(update={"orgs": _with(shop)})
    d = decide_linkage(
        catalog, INDEX, "city-minato", "shop-a", "child-allowance", "local-tax", _at(APRIL)
    )
    assert (d.allowed, d.reason) == (
        False,
        "provider org 'shop-a' is a private body: the whitelist names public bodies only",
    )


def test_only_an_active_org_stands_and_a_merged_one_stops_on_the_date() -> None:
    new = Org(id="town-b", ja="町", en="Town", kind="municipal", roles=(), status="registered")
    gone = Org(
        id="town-c",
        ja="町",
        en="Town",
        kind="municipal",
        roles=("municipal-mayor",),
        successor="city-minato",
        merged_on=APRIL,
    )
    catalog = CATALOG.model_copy(update={"orgs": _with(new, gone)})
    refused = standing_refusal(catalog, "town-b", "city-shibuya", _at(APRIL))
    assert refused is not None and refused.reason == (
        "requester org 'town-b' is registered, not active: only an active org asks or answers"
    )
    assert standing_refusal(catalog, "city-minato", "town-c", _at(APRIL - dt.timedelta(1))) is None
    merged = standing_refusal(catalog, "city-minato", "town-c", _at(APRIL))
    assert merged is not None
    assert merged.reason == "provider org 'town-c' merged into 'city-minato' on 2027-04-01"
    # an org the registry does not know is the whitelist's to name
    assert standing_refusal(catalog, "city-minato", "no-such-org", _at(APRIL)) is None


def test_the_shipped_orgs_stand_in_until_the_registry_holds_any() -> None:
    live = LiveOrgs(CATALOG.orgs)
    assert "city-minato" in live and len(live) == len(CATALOG.orgs)
    only = Org(id="town-d", ja="町", en="Town", kind="municipal", roles=())
    live.replace({only.id: only})
    assert list(live) == ["town-d"] and live.get("city-minato") is None
