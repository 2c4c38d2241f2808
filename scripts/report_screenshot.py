"""Screenshot of an HTML report in headless chromium (docs/report.png).

    whispdiar transcribe -m base "$(whispdiar models path sample)" -f html -d /tmp/shot
    python scripts/report_screenshot.py /tmp/shot/sample.html docs/report.png --line 4

Plays from line N (1-based) for a moment first, so the current line and the playhead show.
Needs /usr/bin/chromium and /usr/bin/chromedriver (`make browser`) and selenium.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("html", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--width", type=int, default=900, help="CSS pixels [900]")
    ap.add_argument("--line", type=int, default=0, help="play from this transcript line first (1-based)")
    args = ap.parse_args()
    profile = tempfile.mkdtemp(prefix="whispdiar-shot-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--mute-audio", "--hide-scrollbars", f"--window-size={args.width},800", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))
    try:
        driver.get(args.html.resolve().as_uri())
        if args.line:
            driver.find_elements(By.CSS_SELECTOR, ".line")[args.line - 1].click()
            time.sleep(1.0)
            driver.execute_script("document.getElementById('player').pause(); document.activeElement.blur(); "
                                  "window.scrollTo(0, 0)")
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(args.width, height + 100)
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": args.width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        args.png.write_bytes(driver.get_screenshot_as_png())
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    print(f"{args.png}: {args.png.stat().st_size / 1000:.0f} KB")


if __name__ == "__main__":
    main()
