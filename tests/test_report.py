"""The HTML report (-f html) in a real headless browser (Debian's chromium + chromedriver via selenium).

The page must load with no console errors, show one timeline lane per speaker, seek the
<audio> element to a line's or bar's start on click and on Enter/Space, filter lines by
search, show transcript markup as text, fit a 375 px screen, and play embedded audio.
`make test` installs chromium (.ci/run too); the browser tests skip only without it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import models_installed

from whispdiar.outputs.report import PALETTE, audio_reference, embed_audio, render_html
from whispdiar.outputs.writers import HtmlWriter
from whispdiar.records import Result, Segment, Speaker, Turn, Word

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
CLI = [sys.executable, "-m", "whispdiar.cli"]
EVIL = 'Watch <script>window.__pwned = 1</script> this & <b>"that"</b>'


def sample_result(audio: str) -> Result:
    """Three speakers on the 30-s sample's time line; one line carries markup."""
    def words(text: str, start: float, who: str) -> list[Word]:
        return [Word(w, start + i * 0.3, start + i * 0.3 + 0.25, 0.9, who) for i, w in enumerate(text.split())]

    texts = [(6.8, 8.0, "Hello. Hello.", "SPEAKER_00"), (8.3, 9.9, "Oh hello, I didn't know you were there.", "S1"),
             (10.1, 11.0, EVIL, "SPEAKER_00"), (15.0, 18.0, "originally from Chicago", "S2"),
             (18.1, 21.7, "Oh I'm originally from Chicago also.", "S1")]
    return Result(
        audio=audio, duration=30.0, language="en",
        segments=[Segment(s, e, t, who, words(t, s, who)) for s, e, t, who in texts],
        speakers=[Speaker("SPEAKER_00", "Anna <b>", 0.9), Speaker("S1", "Speaker 2", 0.8), Speaker("S2", "Bob", 0.7)],
        turns=[Turn(6.7, 8.1, "SPEAKER_00"), Turn(8.2, 10.0, "S1"), Turn(10.0, 11.2, "SPEAKER_00"),
               Turn(14.9, 18.1, "S2"), Turn(17.5, 21.8, "S1")],
        models={"whisper": "tiny.en"},
    )


# ----------------------------------------------------------------------------- without a browser


def _luminance(hex_colour: str) -> float:
    def lin(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5))
    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)


def contrast(a: str, b: str) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def test_colours_meet_wcag_aa() -> None:
    page = render_html(sample_result("a.wav"), audio_src="a.wav")
    for colour in PALETTE:  # speaker names are text in these colours, bars graphics: 4.5:1 covers both
        assert contrast(colour, "#ffffff") >= 4.5, colour
    css_vars = dict(re.findall(r"--(fg|muted): (#[0-9a-f]{6})", page))
    assert contrast(css_vars["fg"], "#ffffff") >= 7 and contrast(css_vars["muted"], "#ffffff") >= 4.5
    assert contrast(css_vars["fg"], "#fff1b8") >= 4.5 and contrast(css_vars["muted"], "#f2f2f2") >= 4.5


def test_markup_is_escaped_and_nothing_is_fetched() -> None:
    page = render_html(sample_result("a.wav"), audio_src="a.wav")
    assert "<script>window.__pwned" not in page and "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page
    assert "Anna <b>" not in page and "Anna &lt;b&gt;" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # no CDN, no network
    assert not re.search(r"@import|url\(", page)


def test_audio_reference_is_relative_to_the_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "rec dir").mkdir()
    (tmp_path / "out").mkdir()
    monkeypatch.chdir(tmp_path)
    assert audio_reference("rec dir/a#1.wav", tmp_path / "out" / "r.html") == "../rec%20dir/a%231.wav"
    assert audio_reference(str(tmp_path / "rec dir" / "a.wav"), None) == "rec%20dir/a.wav"
    page = HtmlWriter(link_audio=False).render(sample_result("stdin"))
    assert "<audio" not in page and "--embed-audio" in page


def test_embedded_audio_is_small_opus(data_dir: Path) -> None:
    uri = embed_audio(data_dir / "diar_sample.flac")
    head, data = uri.split(",", 1)
    assert head == "data:audio/webm;codecs=opus;base64"
    raw = base64.b64decode(data)
    assert raw[:4] == b"\x1a\x45\xdf\xa3"  # EBML: a WebM file
    assert 30_000 < len(raw) < 30 / 60 * 150_000  # 16 kbit/s: about 120 KB per minute


# ----------------------------------------------------------------------------- in chromium


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        if os.environ.get("WHISPDIAR_REQUIRE_BROWSER"):  # .ci/run: a skip would hide a broken report
            pytest.fail("chromium/chromedriver not installed and WHISPDIAR_REQUIRE_BROWSER is set")
        pytest.skip("chromium/chromedriver not installed (`apt-get install chromium chromium-driver`; make test does)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium missing: pip install -e '.[test]'")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="whispdiar-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--mute-audio", "--window-size=1200,900", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _open(driver, page: Path) -> None:  # type: ignore[no-untyped-def]
    driver.get(page.as_uri())
    driver.get_log("browser")  # start each page with an empty log


def _errors(driver) -> list[str]:  # type: ignore[no-untyped-def]
    return [e["message"] for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]


def _wait_for_audio(driver) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 10).until(lambda d: d.execute_script(
        "const a = document.getElementById('player'); return a.readyState >= 1 && a.duration > 0"))


def _now(driver) -> float:  # type: ignore[no-untyped-def]
    return driver.execute_script("return document.getElementById('player').currentTime")


@pytest.fixture(scope="module")
def linked_page(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, Result]:
    root = tmp_path_factory.mktemp("report")
    (root / "audio").mkdir()
    (root / "pages").mkdir()
    shutil.copy(data_dir / "diar_sample.flac", root / "audio" / "diar sample.flac")
    page = root / "pages" / "report.html"
    result = sample_result(str(root / "audio" / "diar sample.flac"))
    HtmlWriter(audio_src=audio_reference(result.audio, page)).write(result, page)
    return page, result


def test_page_in_chromium(browser, linked_page: tuple[Path, Result]) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    page, result = linked_page
    d = browser
    _open(d, page)
    _wait_for_audio(d)
    assert abs(d.execute_script("return document.getElementById('player').duration") - 30.0) < 0.1
    # one lane per speaker, in the result's order, with their bars
    lanes = d.find_elements(By.CSS_SELECTOR, ".lane")
    assert [x.get_attribute("data-speaker") for x in lanes] == [s.name for s in result.speakers]
    assert [len(x.find_elements(By.CSS_SELECTOR, ".bar")) for x in lanes] == [2, 2, 1]
    # markup in the transcript is shown as text and never runs
    lines = d.find_elements(By.CSS_SELECTOR, ".line")
    assert len(lines) == 5 and lines[2].find_element(By.CSS_SELECTOR, ".text").text == " ".join(EVIL.split())
    assert d.execute_script("return window.__pwned") is None
    assert d.find_elements(By.CSS_SELECTOR, ".line b") == []
    # clicking a line seeks to its start; Enter on a line, Space on a bar too
    lines[3].click()
    assert abs(_now(d) - 15.0) < 0.1
    lines[1].send_keys(Keys.ENTER)
    assert abs(_now(d) - 8.3) < 0.1
    bar = lanes[1].find_elements(By.CSS_SELECTOR, ".bar")[1]
    bar.send_keys(Keys.SPACE)
    assert abs(_now(d) - 17.5) < 0.1
    bar = lanes[0].find_elements(By.CSS_SELECTOR, ".bar")[1]
    bar.click()
    assert abs(_now(d) - 10.0) < 0.1
    # every line and bar is reachable with Tab
    focusable = d.execute_script(
        "return Array.from(document.querySelectorAll('.line, .bar')).every(e => e.tabIndex >= 0)")
    assert focusable
    # search filters lines (case-insensitive), clearing it shows all again
    box = d.find_element(By.ID, "search")
    box.send_keys("CHICAGO")
    shown = [x for x in lines if x.is_displayed()]
    assert [x.get_attribute("data-start") for x in shown] == ["15.000", "18.100"]
    assert d.find_element(By.ID, "count").text == "2 of 5 lines"
    box.send_keys("zzz")
    assert not any(x.is_displayed() for x in lines)
    box.clear()
    box.send_keys(" ")
    assert all(x.is_displayed() for x in lines)
    assert _errors(d) == []


def test_phone_width(browser, linked_page: tuple[Path, Result]) -> None:  # type: ignore[no-untyped-def]
    d = browser
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                      {"width": 375, "height": 740, "deviceScaleFactor": 2, "mobile": True})
    try:
        _open(d, linked_page[0])
        assert d.execute_script("return window.innerWidth") == 375
        # nothing sticks out sideways: no horizontal scrolling on a phone
        assert d.execute_script("return document.documentElement.scrollWidth") <= 375
        widths = d.execute_script("return Array.from(document.querySelectorAll('.track')).map(t => t.clientWidth)")
        assert min(widths) >= 200  # the lanes keep most of the width
        assert _errors(d) == []
    finally:
        d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_embedded_audio_plays_offline(browser, tmp_path: Path, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    page = tmp_path / "embedded.html"  # no audio file next to it: everything is in the page
    result = sample_result(str(data_dir / "diar_sample.flac"))
    HtmlWriter(embedded=embed_audio(data_dir / "diar_sample.flac")).write(result, page)
    d = browser
    _open(d, page)
    _wait_for_audio(d)
    assert d.execute_script("return document.getElementById('player').src").startswith("blob:")
    assert abs(d.execute_script("return document.getElementById('player').duration") - 30.0) < 0.2
    d.find_elements(By.CSS_SELECTOR, ".line")[4].click()
    assert abs(_now(d) - 18.1) < 0.1
    assert _errors(d) == []


@pytest.mark.slow
@pytest.mark.skipif(not models_installed("tiny.en", "segmentation-3.0", "campplus"), reason="needs `make models`")
def test_real_transcription_report(browser, tmp_path: Path, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """One real run (tiny.en, the 30-s two-speaker sample): the report, the stats as TSV and
    the JSON agree with each other and in the browser."""
    from selenium.webdriver.common.by import By

    out = tmp_path / "out"
    p = subprocess.run(CLI + ["transcribe", "-q", "-m", "tiny.en", str(data_dir / "diar_sample.flac"),
                              "-f", "html", "-f", "stats", "--tsv", "-f", "json", "-d", str(out),
                              "--speakers-db", str(tmp_path / "speakers.db")], capture_output=True, timeout=600)
    assert p.returncode == 0, p.stderr.decode()
    doc = json.loads((out / "diar_sample.json").read_text())
    rows = [r.split("\t") for r in (out / "diar_sample.stats.tsv").read_text().splitlines()[1:]]
    assert [r[0] for r in rows] == [s["name"] for s in doc["speakers"]] and len(rows) >= 2
    for r, sp in zip(rows, doc["speakers"], strict=True):
        turns = [t for t in doc["turns"] if t["speaker"] == sp["name"]]
        words = [w for s in doc["segments"] for w in s["words"] if w["speaker"] == sp["name"]]
        assert abs(float(r[1]) - sum(t["end"] - t["start"] for t in turns)) < 0.01
        assert int(r[5]) == len(words) == sp["words"]
        assert abs(float(r[6]) - len(words) / float(r[1]) * 60) < 0.1
    assert abs(sum(float(r[2]) for r in rows) - 1) < 0.002
    d = browser
    _open(d, out / "diar_sample.html")
    _wait_for_audio(d)
    lanes = [x.get_attribute("data-speaker") for x in d.find_elements(By.CSS_SELECTOR, ".lane")]
    assert lanes == [s["name"] for s in doc["speakers"]]
    lines = d.find_elements(By.CSS_SELECTOR, ".line")
    assert len(lines) == len([s for s in doc["segments"] if s["text"]])
    lines[-1].click()
    assert abs(_now(d) - doc["segments"][-1]["start"]) < 0.1
    assert _errors(d) == []
