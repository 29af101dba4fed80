"""The operator's page in a real browser (Debian's headless Chromium) against a running
virtual line: the counters match the run, an injected alarm is acknowledged with the
token and not without, two parts are reviewed and exported, each view is saved as PNG."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import cv2
import pytest

from station.audit import AuditReader
from station.web.export import export_reviewed
from station.web.screenshot import BrowserMissing, headless_chromium, screenshot_views

REPO = Path(__file__).resolve().parent.parent
TOKEN = "browser-test-token-0123456789"
PARTS = 100
"""20 s of line at 5 parts/s: time for a person to do all this before it stops."""


@pytest.fixture
def browser():
    try:
        driver = headless_chromium()
    except BrowserMissing as exc:
        if os.environ.get("STATION_REQUIRE_FIRMWARE"):  # CI: tools/setup installs it
            raise
        pytest.skip(str(exc))
    yield driver
    driver.quit()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_page_in_a_browser_on_a_virtual_line(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from station.config import load_station_config
    from station.sim.virtual_line import Fault, run_virtual_line

    config, calibration = load_station_config(REPO / "calibration" / "virtual-line.station.yaml")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    os.chmod(token_file, 0o600)
    port = _free_port()
    config = config.model_copy(
        update={
            "audit": config.audit.model_copy(
                update={"database": tmp_path / "audit.sqlite", "images_dir": tmp_path / "images"}
            ),
            "web": config.web.model_copy(
                update={"listen": f"127.0.0.1:{port}", "token_file": token_file}
            ),
        }
    )
    url = f"http://127.0.0.1:{port}/"
    seen: dict = {}

    def wait(condition, seconds: float = 30):
        return WebDriverWait(browser, seconds, poll_frequency=0.1).until(lambda d: condition())

    def text(element_id: str) -> str:
        return browser.find_element(By.ID, element_id).text

    # Read and click in the page's own JavaScript: it redraws its tables every poll, and
    # an element found in one call may be gone by the next.
    def counters() -> dict[str, int]:
        return browser.execute_script(
            "const out = {};"
            "for (const tr of document.querySelectorAll('#counters tbody tr')) {"
            "  const c = [...tr.children].map((e) => e.textContent.trim());"
            "  if (c.length === 3 && /^\\d+$/.test(c[2])) out[c[0]] = Number(c[2]);"
            "}"
            "return out;"
        )

    def rows(selector: str) -> int:
        return browser.execute_script(f"return document.querySelectorAll('{selector}').length;")

    def click_card(index: int) -> int:
        """The index-th card of a judged reject (a fail-safe one may have no image: a part
        the stalled camera never saw)."""
        return int(
            browser.execute_script(
                "const judged = [...document.querySelectorAll('#reject-grid .card')]"
                "  .filter((c) => c.textContent.includes(' reject '));"
                f"const c = judged[{index}]; c.click(); return c.dataset.uid;"
            )
        )

    def judged_cards() -> int:
        return browser.execute_script(
            "return [...document.querySelectorAll('#reject-grid .card')]"
            "  .filter((c) => c.textContent.includes(' reject ')).length;"
        )

    def person() -> None:
        try:
            started = time.monotonic()
            wait(lambda: _page_up(browser, url), 60)
            seen["first_paint_s"] = wait(
                lambda: browser.execute_script(
                    "const p = performance.getEntriesByName('first-contentful-paint')[0];"
                    "return p ? p.startTime / 1000 : null;"
                ),
                10,
            )
            seen["stage"] = "counters"
            wait(lambda: counters().get("parts", 0) >= 3, 60)
            seen["stage"] = "alarm"
            # The alarm injected by the camera stall, acknowledged without then with the token.
            wait(lambda: browser.find_element(By.ID, "alarm-count").is_displayed(), 60)
            browser.find_element(By.CSS_SELECTOR, "nav button[data-view=alarms]").click()
            wait(lambda: rows("#alarms-active tbody tr"))
            browser.find_element(By.ID, "name").send_keys("ana")
            browser.find_element(By.ID, "ack").click()
            wait(lambda: "token" in text("ack-result"))
            seen["ack_refused"] = text("ack-result")
            seen["active_after_refusal"] = rows("#alarms-active tbody tr")
            browser.find_element(By.ID, "token").send_keys(TOKEN)
            browser.find_element(By.ID, "ack").click()
            wait(lambda: "acknowledged by ana" in text("ack-result"))
            wait(lambda: rows("#alarms-active tbody tr") == 0)
            seen["stage"] = "review"
            # Two rejected parts reviewed from their cards.
            browser.find_element(By.CSS_SELECTOR, "nav button[data-view=rejects]").click()
            wait(lambda: judged_cards() >= 2)
            for index, truth in ((0, "defective"), (1, "ok")):
                seen.setdefault("reviewed", []).append(click_card(index))
                wait(lambda: browser.find_element(By.ID, "part-dialog").is_displayed())
                browser.find_element(By.ID, f"review-{truth}").click()
                wait(lambda: "recorded" in text("review-result"))
                browser.find_element(By.ID, "close-dialog").click()
            seen["stage"] = "screenshots"
            seen["screenshots"] = screenshot_views(browser, url, tmp_path / "screenshots", 1.0)
            seen["stage"] = "end of run"
            # The line view at the end of the run: every part judged.
            browser.get(url + "#line")
            wait(lambda: counters().get("parts", 0) == PARTS, 90)
            wait(lambda: counters()["passed"] + counters()["rejected"] == PARTS, 30)
            seen["counters"] = counters()
            seen["took_s"] = time.monotonic() - started
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            seen["error"] = exc

    visitor = threading.Thread(target=person, daemon=True)
    visitor.start()
    # The stall raises an alarm; the line needs the main thread for its signal handlers.
    summary = run_virtual_line(
        config,
        calibration,
        config.virtual_line,
        PARTS,
        [Fault("camera-stall", 1.5, 1.5)],
        tmp_path,
    )
    visitor.join(timeout=30)
    if "error" in seen:
        raise seen["error"]
    assert "counters" in seen, f"the page was not through when the line stopped: {seen}"
    assert seen["ack_refused"] and seen["active_after_refusal"] >= 1
    page = seen["counters"]
    assert page["parts"] == summary["parts"] == PARTS
    reader = AuditReader(tmp_path / "audit.sqlite")
    verdicts = reader.counts_since(0)
    assert (page["passed"], page["rejected"]) == (verdicts["passed"], verdicts["rejected"])
    assert page["of which fail-safe"] == summary["failsafe_rejects"]
    reviews = {r["uid"]: r["truth"] for r in reader.latest_reviews()}
    assert reviews == dict(zip(seen["reviewed"], ("defective", "ok")))
    assert any(a["detail"] == "alarms acknowledged by ana" for a in reader.alarms()[1])
    exported = export_reviewed(
        tmp_path / "audit.sqlite",
        tmp_path / "reviewed",
        calibration.camera.crop_px,
        calibration.camera.min_part_area_px,
    )
    assert exported.exported == {"defective": 1, "ok": 1}
    for path in seen["screenshots"]:
        image = cv2.imread(str(path))
        assert image is not None and image.shape[1] == 1280, path
    print(f"\nfirst paint of the line view: {seen['first_paint_s']:.3f} s")


def _page_up(browser, url: str) -> bool:
    try:
        browser.get(url)
    except Exception:  # noqa: BLE001 - the station is still starting
        return False
    return "Reject station" in browser.title
