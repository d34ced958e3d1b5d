"""The page in a real browser (issue #21): headless Chromium driven by Selenium.

Starts the app on 127.0.0.1 (a free port) in this process, clicks the bundled example and
separates it, uploads a file, separates it, checks the stems' players and images, downloads a stem
through its button and reads its length, and uploads a bad file to see the error in the page. A
screenshot of the result is saved (its path is printed; ``DEMIXERS_WEB_SCREENSHOT`` picks it, and
``DEMIXERS_UPDATE_README_SCREENSHOT=1`` also copies it to docs/web_demo.png).

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and the ``selenium``
package (the ``test`` extra). Without them the test skips, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import soundfile

from tests.web.conftest import write_mixture

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("DEMIXERS_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("DEMIXERS_CHROMEDRIVER", "/usr/bin/chromedriver")
SEPARATION_TIMEOUT = 120.0


def _missing() -> str | None:
    try:
        import gradio  # noqa: F401
        import selenium  # noqa: F401
    except ImportError as error:
        return f"{error.name} is not installed (pip install -e '.[test]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{path} is missing (apt-get install chromium chromium-driver, or .ci/run as root)"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    missing = _missing()
    if missing is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the browser test must run in CI: {missing}")
        pytest.skip(missing)
    from demixers.web.app import build_app, launch_options

    page = build_app(results_root=tmp_path_factory.mktemp("web_results"))
    page.queue()
    port = _free_port()
    page.launch(
        server_name="127.0.0.1",
        server_port=port,
        share=False,
        prevent_thread_lock=True,
        quiet=True,
        **launch_options(page),
    )
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        page.close()


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(server: str, downloads: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # a fake microphone (a beep) that needs no permission prompt: the page's recording is tested too
    fake_media = ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        *fake_media,
    ):
        options.add_argument(argument)
    options.add_argument("--window-size=1400,1800")
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    # an explicit driver: Selenium Manager would try to download one
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    try:
        driver.get(server)
        yield driver
    finally:
        driver.quit()


def _wait(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def _text(driver: Any, selector: str) -> str:
    found = _css(driver, selector)
    return found[0].text if found else ""


def _status(driver: Any) -> str:
    return _text(driver, "#status")


def _separate(driver: Any) -> str:
    """Click *Separate* and wait for the new status line (a result or an error; each run here has
    another one)."""
    before = _status(driver)
    _css(driver, "#separate")[0].click()
    return _wait(
        lambda: (text := _status(driver)) != before and text.startswith(("Separated", "Error")) and text,
        SEPARATION_TIMEOUT,
        "the separation's status",
    )


def _upload(driver: Any, path: Path) -> None:
    clear = _css(driver, "#input-audio button[aria-label='Clear']")
    if clear:
        clear[0].click()
        _wait(lambda: _css(driver, "#input-audio input[type=file]"), 20, "the emptied upload box")
    _css(driver, "#input-audio input[type=file]")[0].send_keys(str(path))
    _wait(
        lambda: any(
            (link.get_attribute("href") or "").endswith("/" + path.name)
            for link in _css(driver, "#input-audio a[data-testid='download-link']")
        ),
        30,
        f"the upload of {path.name}",
    )


def _visible_stems(driver: Any) -> list[int]:
    return [
        index for index in range(12) if any(group.is_displayed() for group in _css(driver, f"#stem-{index}"))
    ]


def _wait_for_players(driver: Any, duration: str | None, count: int = 2) -> None:
    """Until the first ``count`` stem players have decoded their file: they show its ``duration``
    (``None``: any non-zero one)."""

    def loaded(index: int) -> bool:
        shown = _text(driver, f"#stem-audio-{index} time#duration")
        return shown == duration if duration is not None else shown not in ("", "0:00")

    for index in range(count):
        _wait(lambda index=index: loaded(index), 30, f"stem player {index} to load its audio ({duration})")


@pytest.mark.slow
def test_the_page_separates_uploads_and_reports_bad_files(
    server: str, browser: Any, downloads: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    driver = browser
    _wait(lambda: "default_speech_8k" in _text(driver, "#model-card"), 60, "the model card")

    # 1. the bundled example, one click away, scored against its reference speakers
    _css(driver, "#example button")[0].click()
    _wait(
        lambda: _css(driver, "#input-audio a[data-testid='download-link']"),
        30,
        "the example in the upload box",
    )
    status = _separate(driver)
    assert status.startswith("Separated mixture.wav"), status
    assert "SI-SNRi of these stems" in status and "reference for the bundled model: 6.38 dB" in status
    _wait_for_players(driver, "0:10")

    screenshot = Path(
        os.environ.get(
            "DEMIXERS_WEB_SCREENSHOT",
            Path(tempfile.gettempdir()) / "demixers-test-artifacts" / "web_demo.png",
        )
    )
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(screenshot))
    with capsys.disabled():  # shown even when pytest captures output
        print(f"\nscreenshot of the web demo: {screenshot}")
    if os.environ.get("DEMIXERS_UPDATE_README_SCREENSHOT") == "1":
        from PIL import Image

        (REPO_ROOT / "docs").mkdir(exist_ok=True)
        with Image.open(screenshot) as image:  # 256 colours: a third of the size, same look
            image.convert("RGB").quantize(256).save(REPO_ROOT / "docs" / "web_demo.png", optimize=True)

    # 2. an upload at another rate and channel count: stems at the input's rate and length
    upload = write_mixture(tmp_path / "upload_16k.wav", seconds=3.0, sampling_rate=16000, channels=2)
    _upload(driver, upload)
    status = _separate(driver)
    assert status.startswith("Separated upload_16k.wav (3.0 s at 16000 Hz) into 2 stems"), status
    assert _visible_stems(driver) == [0, 1]
    _wait_for_players(driver, "0:03")
    for index in (0, 1):
        # the player got its file, and the image is a loaded picture
        player_links = _css(driver, f"#stem-audio-{index} a[data-testid='download-link']")
        assert player_links and player_links[0].get_attribute("href").endswith(f"speaker_{index + 1}.wav")
        image = _css(driver, f"#stem-image-{index} img")[0]
        assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) > 100
    assert _css(driver, "#mixture-image img") and _css(driver, "#zip")[0].is_displayed()

    _css(driver, "#stem-download-0")[0].click()
    downloaded = _wait(
        lambda: (path := downloads / "speaker_1.wav").is_file() and soundfile.info(path).frames and path,
        30,
        "the downloaded stem",
    )
    info = soundfile.info(downloaded)
    assert (info.frames, info.samplerate) == (soundfile.info(upload).frames, 16000)

    # 3. a file that is not audio: the CLI's one-line error in the page, no stems, no traceback
    bad = tmp_path / "not_audio.wav"
    bad.write_bytes(b"this is not audio at all\n" * 40)
    _upload(driver, bad)
    status = _separate(driver)
    assert status.startswith("Error: not_audio.wav: not a readable audio file"), status
    assert "Traceback" not in driver.page_source
    assert _visible_stems(driver) == []

    # the page itself never reached beyond this machine (fonts, scripts, analytics)
    fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    outside = [url for url in fetched if not url.startswith((server, "data:", "blob:"))]
    assert fetched and not outside, outside


@pytest.mark.slow
def test_a_recording_from_the_microphone_is_separated(browser: Any):
    driver = browser
    _css(driver, "#input-audio button[aria-label='Record audio']")[0].click()
    _wait(lambda: _css(driver, "#input-audio button.record-button"), 20, "the record button")
    _css(driver, "#input-audio button.record-button")[0].click()
    time.sleep(2.0)  # two seconds of the fake microphone's beep
    stop = _wait(
        lambda: [
            button for button in _css(driver, "#input-audio button.stop-button") if button.is_displayed()
        ],
        20,
        "the stop button",
    )
    stop[0].click()
    _wait(lambda: _css(driver, "#input-audio a[data-testid='download-link']"), 30, "the recording's upload")
    status = _separate(driver)
    assert status.startswith("Separated") and "into 2 stems" in status, status
    seconds = float(status.split("(")[1].split(" s at")[0])
    assert 1.0 <= seconds <= 10.0, status
    _wait_for_players(driver, None)
