"""`station screenshot`: each view of the operator's page as a PNG, from headless Chromium.

Needs Debian's `chromium` and `chromium-driver` and the `selenium` package (the
test extra); the station itself never does. The README's pictures are made
with it against a virtual line (README, "The operator's page").
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

VIEWS = ("line", "alarms", "rejects", "health")
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = ("chromedriver", "chromium-driver")


class BrowserMissing(RuntimeError):
    """Chromium, its driver or selenium is not installed; the message says which."""


def headless_chromium(width: int = 1280, height: int = 900):
    """A headless Chromium driven by selenium, with the Debian binaries."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise BrowserMissing("selenium is not installed (pip install -e '.[test]')") from None
    browser = next((p for p in map(shutil.which, CHROMIUM) if p), None)
    driver = next((p for p in map(shutil.which, DRIVER) if p), None)
    if browser is None or driver is None:
        raise BrowserMissing(
            "chromium and chromium-driver are needed (apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespaces for the sandbox
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(driver), options=options)


def screenshot_views(driver, url: str, out_dir: Path, settle_s: float = 1.5) -> list[Path]:
    """Open each view (`url#view`), let it fill, save `out_dir/<view>.png`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    for view in VIEWS:
        driver.get(f"{url.rstrip('/')}/#{view}")
        time.sleep(settle_s)  # two polls of the status, one of the slower lists
        path = out_dir / f"{view}.png"
        if not driver.save_screenshot(str(path)):
            raise RuntimeError(f"{path}: the browser could not save the screenshot")
        saved.append(path)
    return saved
