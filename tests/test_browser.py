"""In headless Chromium: the citizen's page, and the Temporal Web UI through the codec server.

Chromium is Debian's (``apt-get install chromium``; ``.ci/run`` installs it), driven by
Playwright. Screenshots are kept in ``RENKEI_TEST_ARTIFACTS`` (``test-artifacts/`` by default).
Without Chromium these tests are skipped, except under CI, where that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from renkei.app.web import serving
from renkei.app.web.codec_server import add_operator
from renkei.kernel.settings import Settings
from tests.paths import PROJECT_ROOT, SAMPLES_DIR

from .helpers import child_rearing, code, pick, start

ARTIFACTS = Path(os.environ.get("RENKEI_TEST_ARTIFACTS", PROJECT_ROOT / "test-artifacts"))
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    found = os.environ.get("RENKEI_CHROMIUM") or shutil.which("chromium")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is not installed (apt-get install chromium)")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    return found


@pytest_asyncio.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    executable = _chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before any page
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield b
        await b.close()


@pytest_asyncio.fixture
async def web(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[str]:
    async with serving(settings, pool) as base:
        yield base


async def test_citizen_page_on_a_phone_in_both_languages(
    browser, env, web: str, settings: Settings
) -> None:
    from .test_web import portal_code

    h = pick(settings, lambda h: h.kind == "family" and h.municipality == "city-minato")
    head, spouse = h.members[0], h.members[1]
    handle = await env.start(child_rearing(settings, head, spouse))
    await handle.result()
    context = await browser.new_context(
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        locale="ja-JP",
    )
    page = await context.new_page()
    try:
        await page.goto(f"{web}/citizen?lang=ja")
        await page.fill("#portal_code", "Z" * 20)
        await page.click("button[type=submit]")
        assert await page.locator("[role=alert]").inner_text() == "この符号は登録されていません。"

        await page.fill("#portal_code", portal_code(settings, spouse))
        await page.click("button[type=submit]")
        await page.wait_for_selector("ol.records")
        mine = page.locator(f'li.record[data-application="{handle.id}"]')
        assert await mine.count() == 1  # the spouse's income, nothing of the head's
        text = await mine.inner_text()
        assert "東京都" in text and "港区" in text and "番号法別表第二 五十七項" in text
        # newest first
        stamps = await page.locator("li.record time").evaluate_all(
            "els => els.map(e => e.getAttribute('datetime'))"
        )
        assert stamps == sorted(stamps, reverse=True)
        # fits the phone: nothing scrolls sideways
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0
        await page.screenshot(path=str(ARTIFACTS / "citizen-records-ja-phone.png"), full_page=True)

        await page.click("a.lang")
        await page.wait_for_selector("text=Record of data exchanges")
        assert "Requested by" in await mine.inner_text()
        await page.screenshot(path=str(ARTIFACTS / "citizen-records-en-phone.png"), full_page=True)

        await page.select_option("select[name=agency]", "jps")
        await page.click("form.filters button")
        await page.wait_for_load_state()
        assert await page.locator(f'li.record[data-application="{handle.id}"]').count() == 0
        assert "agency=jps" in page.url
    finally:
        await context.close()


async def _workflow_page_text(
    page: Any, settings: Settings, workflow_id: str, shows: str | None = None
) -> str:
    """The text of the UI's page of ``workflow_id``; once it ``shows`` that text, if given (the
    UI decodes payloads after rendering, and may take its time on a busy machine)."""
    from urllib.parse import quote

    url = (
        f"http://localhost:{settings.ui_port}/namespaces/default/workflows/"
        f"{quote(workflow_id, safe='')}"
    )
    await page.goto(url)
    await page.wait_for_selector("h5:has-text('Input')", state="attached", timeout=30_000)
    await page.wait_for_load_state("networkidle")  # the UI decodes payloads after rendering
    if shows is not None:
        await page.wait_for_function(
            "s => document.body.innerText.includes(s)", arg=shows, timeout=30_000
        )
    else:
        await page.wait_for_timeout(1_000)
    text: str = await page.inner_text("body")
    return text


async def test_temporal_ui_shows_clear_payloads_only_to_a_signed_in_operator(
    browser, env, web: str, pool: asyncpg.Pool, settings: Settings
) -> None:
    h = pick(settings, lambda h: h.kind == "single-parent" and h.municipality == "city-minato")
    secret = code(settings, "pref-tokyo", h.members[0])
    handle = await env.start(
        start(
            "child-rearing-allowance-income-check",
            "pref-tokyo",
            secret,
            inputs={"municipality": "city-minato"},
        )
    )
    await handle.result()

    anonymous = await browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = await anonymous.new_page()
        text = await _workflow_page_text(page, settings, handle.id)
        assert secret not in text and '"executor"' not in text  # ciphertext only
        await page.screenshot(path=str(ARTIFACTS / "temporal-ui-without-token.png"), full_page=True)
    finally:
        await anonymous.close()

    operator = await browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        # pref-tokyo's own operator: the flow is pref-tokyo's, sealed to it
        token = await add_operator(pool, f"ui-{uuid.uuid4().hex[:6]}", "pref-tokyo")
        page = await operator.new_page()
        await page.goto(f"{settings.codec_endpoint}/login")
        await page.fill("input[name=token]", token)
        await page.click("button")
        await page.wait_for_selector("text=Signed in as")
        # The operator's one-time UI setting: send credentials to the codec server.
        settings_js = {
            "endpoint": settings.codec_endpoint,
            "includeCredentials": True,
            "overrideRemoteCodecConfiguration": True,
        }
        await operator.add_init_script(
            "".join(
                f"window.localStorage.setItem({json.dumps(k)}, {json.dumps(json.dumps(v))});"
                for k, v in settings_js.items()
            )
        )
        page = await operator.new_page()
        text = await _workflow_page_text(page, settings, handle.id, shows=secret)
        await page.screenshot(path=str(ARTIFACTS / "temporal-ui-with-token.png"), full_page=True)
        assert secret in text and '"executor": "pref-tokyo"' in text
    finally:
        await operator.close()
    granted = await pool.fetchval(
        "SELECT count(*) FROM codec.requests WHERE operator LIKE 'ui-%' AND granted"
    )
    assert granted > 0


async def test_the_bpf_catalog_renders_for_citizens(browser) -> None:
    from renkei.app.catalog_page import render
    from renkei.bpf.loader import definition_files, load_file
    from renkei.bpf.models import ActStep, QueryStep, walk
    from whitelist.catalog import default_catalog
    from whitelist.decide import WhitelistIndex
    from whitelist.local import all_rows

    catalog = default_catalog()
    definitions = [load_file(p).definition for p in definition_files(SAMPLES_DIR)]
    html = render(definitions, catalog, WhitelistIndex(all_rows(catalog)))
    path = ARTIFACTS / "bpf-catalog.html"
    path.write_text(html, encoding="utf-8")
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, locale="ja-JP")
    try:
        page = await context.new_page()
        await page.goto(path.as_uri())
        for d in definitions:
            section = page.locator(f"section#{d.bpf}")
            assert await section.locator("h2").inner_text() == f"{d.title.ja} {d.title.en}"
            assert await section.locator(".diagram svg").is_visible()
            asked = [s for s in walk(list(d.steps)) if isinstance(s, QueryStep | ActStep)]
            assert await section.locator("tr.linkage").count() == len(asked)
            table = await section.locator("table").inner_text()
            # the Act, a municipality's own ordinance (番号法第9条第2項), or the APPI
            assert any(law in table for law in ("番号法", "条例", "個人情報保護法"))
        # a partner's act: what is sent, and only with the citizen's consent
        act = await page.locator("section#move-notice-electricity tr.linkage").inner_text()
        assert "処理の依頼" in act and "new_address" in act and "本人の同意" in act
        assert "民間事業者" in act and "第69条第2項第1号" in act
        # nothing is fetched: the page is one file
        assert "http" not in html.split("<body>")[1].split("xmlns")[0]
        await page.screenshot(path=str(ARTIFACTS / "bpf-catalog.png"), full_page=True)
    finally:
        await context.close()
