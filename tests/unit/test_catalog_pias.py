"""The catalog page shows each flow's PIAs and the suspensions that stop it."""

from __future__ import annotations

from tests.unit.test_linkage_controls import DAY, pia, suspension
from whitelist.controls import ControlsIndex


def test_the_catalog_shows_each_partys_pia_and_what_stops_the_flow() -> None:
    from renkei.app.catalog_page import pia_lines, stopping
    from renkei.bpf.loader import load_file
    from tests.paths import SAMPLES_DIR
    from whitelist.catalog import default_catalog

    catalog = default_catalog()
    d = load_file(SAMPLES_DIR / "child-rearing-allowance.yaml").definition
    pias = [pia("pref-tokyo", task=d.task), pia("city-minato", task=d.task, status="withdrawn")]
    lines = {line.org_en: line for line in pia_lines(d, catalog, ControlsIndex(pias), DAY)}
    tokyo = lines[catalog.orgs["pref-tokyo"].en]
    assert (
        tokyo.in_force
        and "全項目評価" in tokyo.status_ja
        and "review due 2030-03-31" in tokyo.status_en
    )
    assert all(not line.in_force for org, line in lines.items() if org != tokyo.org_en)
    assert not stopping(d, catalog, ControlsIndex(pias))
    stopped = ControlsIndex(
        pias,
        [
            suspension("bpf", d.bpf, version=d.version),
            suspension("org", "pref-tokyo", side="requester"),
        ],
    )
    assert [s.split(":")[0] for s in stopping(d, catalog, stopped)] == [
        f"BPF {d.bpf} v{d.version}",
        "org pref-tokyo (as requester)",
    ]
