"""The console in a real browser (headless Chromium driven by Selenium) on a real `vetro serve`, a real
worker and a real dead-letter store: an operator's path from "why did jobs fail" to a replay that
finishes them and a discard of the rest, what a viewer may not do even with a crafted request, and a
cross-site form that finds no session to ride on.

Nothing is downloaded: the browser and its driver are Debian's (/usr/bin/chromium, /usr/bin/chromedriver),
found by path, so Selenium Manager never runs. VETRO_TEST_SCREENSHOTS=1 saves the main pages to
docs/images/console-<page>.png (1280x800); a normal run writes nothing into the repository.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from dlq import audit, selection, store
from dlq.db import session
from dlq.models import Status
from dlq.store import RowFilter
from pipeline.dependencies.breakers import force, status
from pipeline.jobs.ledger import get_job
from pipeline.store import redis_client
from tests.conftest import CONSOLE_PASSWORD, CONSOLE_PEOPLE, worker_env
from tests.helpers import dead_letter_event, workers
from tests.pipelines import SHOP_FLAG, mend, pack
from vetro.testing.processes import WorkerProcess, free_port, wait_until
from vetro.web.security import SESSION_COOKIE

pytestmark = [pytest.mark.integration]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "images"
WIDTH, HEIGHT = 1280, 800
WAIT = 60  # seconds for what a loaded machine takes (a worker's job, a page the script refreshes)
SQLITE_ONLY = pytest.mark.parametrize("database", ["sqlite"], indirect=True)


def require_browser() -> None:
    """Skip, saying what is missing, without Chromium and its driver (VETRO_TEST_REQUIRE_BROWSER: fail instead)."""
    missing = [path for path in (CHROMEDRIVER, CHROMIUM) if not os.access(path, os.X_OK)]
    if not missing:
        return
    reason = f"needs {' and '.join(missing)} (Debian: apt-get install chromium chromium-driver)"
    if os.environ.get("VETRO_TEST_REQUIRE_BROWSER"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    """One headless Chromium for the module, with a fresh profile; quit at the end."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="vetro-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--window-size={WIDTH},{HEIGHT}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    offline = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"  # and the driver's path is given: Selenium Manager never runs
    try:
        browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    finally:
        if offline is None:
            os.environ.pop("SE_OFFLINE", None)
        else:
            os.environ["SE_OFFLINE"] = offline
    try:
        # The page itself is WIDTH x HEIGHT (the window's size would include the browser's own bars).
        browser.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        )
        browser.set_page_load_timeout(WAIT)
        browser.set_script_timeout(30)
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser(driver) -> Iterator[Any]:
    """The module's browser with no cookie left from another test's console (cookies ignore the port)."""
    driver.get("about:blank")
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
    yield driver
    driver.get("about:blank")
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})


@pytest.fixture
def shop_worker(database) -> Iterator[WorkerProcess]:
    """A real worker writing to this test's dead-letter database. The module-scoped `worker` fixture
    starts before the function-scoped `database` and so would write to the session's default store."""
    with workers(worker_env()) as (started,):
        yield started


@pytest.fixture
def unfixed() -> Iterator[None]:
    """`mend` fails until the test fixes its cause; the flag is shared by the session's Redis."""
    redis_client().delete(SHOP_FLAG)
    yield
    redis_client().delete(SHOP_FLAG)


# --- reading and driving pages ---------------------------------------------------------------


def by_id(browser, element_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.ID, element_id)


def css(browser, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, selector)


def text_of(browser, element_id: str) -> str:
    """An element's text now, or "" while it is missing (a page still loading, or being replaced)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    try:
        return by_id(browser, element_id).text
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def page_text(browser) -> str:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException

    try:
        return browser.find_element("tag name", "body").text
    except (NoSuchElementException, StaleElementReferenceException, WebDriverException):
        return ""


def until(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    return wait_until(check, timeout, what, interval=0.2)


def at(browser, path_pattern: str) -> bool:
    """The browser shows a loaded page whose path (and query) matches."""
    return bool(re.search(path_pattern, browser.current_url)) and (
        browser.execute_script("return document.readyState") == "complete"
    )


def sign_in(browser, url: str, name: str) -> None:
    browser.get(f"{url}/login")
    css(browser, "#login input[name=name]")[0].send_keys(name)
    css(browser, "#login input[name=password]")[0].send_keys(CONSOLE_PASSWORD)
    css(browser, "#login button[type=submit]")[0].click()
    until(lambda: text_of(browser, "signed-in") == f"{name} ({CONSOLE_PEOPLE[name]})", f"{name} to be signed in")


def snapshot(browser, page: str) -> None:
    """docs/images/console-<page>.png, only when asked (VETRO_TEST_SCREENSHOTS=1)."""
    if os.environ.get("VETRO_TEST_SCREENSHOTS") != "1":
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.save_screenshot(str(SCREENSHOTS / f"console-{page}.png"))


def table_rows(browser, table_id: str) -> list[list[str]]:
    rows = css(browser, f"#{table_id} tbody tr")
    return [[cell.text for cell in row.find_elements("tag name", "td")] for row in rows]


# --- the store ---------------------------------------------------------------------------------


def add_rows(*events: store.DeadLetterEvent) -> None:
    with session() as active:
        for event in events:
            store.write(active, event)


def statuses(**given: Any) -> dict[str, str]:
    """Each matching row's job id and status."""
    return {row.job_id: str(row.status) for row in store.rows(RowFilter(**given))}


@SQLITE_ONLY
def test_an_operator_finds_why_jobs_failed_replays_the_fixable_ones_and_discards_the_rest(
    browser, console, shop_worker, unfixed
):
    run = uuid.uuid4().hex[:8]
    for n in range(4):
        mend.delay(f"order-{n}-{run}")  # fails for good: the cause is not fixed yet
    until(lambda: store.count(RowFilter(stage="mend")) == 4, "the 4 failed mend jobs' dead letters")
    mended = statuses(stage="mend")
    assert set(mended.values()) == {Status.FAILED}
    add_rows(*(dead_letter_event(f"sku-{n}-{run}", message="unknown sku") for n in range(2)))  # another cause

    sign_in(browser, console, "otto")
    until(lambda: at(browser, rf"^{re.escape(console)}/$"), "the overview after signing in")
    css(browser, "nav a[href='/dead-letters']")[0].click()
    until(lambda: at(browser, r"/dead-letters$"), "the dead letters list")
    assert text_of(browser, "count") == "6 dead letter(s) match."
    snapshot(browser, "dead-letters")

    # Why did jobs fail? Two causes; follow the mend one.
    css(browser, "header nav a[href='/patterns']")[0].click()
    until(lambda: at(browser, r"/patterns$"), "the patterns page")
    patterns = table_rows(browser, "patterns")
    assert len(patterns) == 2, patterns
    (mend_pattern,) = [row for row in patterns if row[2] == "mend"]
    assert mend_pattern[1] == "4" and "cannot mend" in mend_pattern[5], mend_pattern
    snapshot(browser, "patterns")
    css(browser, f"#patterns a[href='/dead-letters?fingerprint={mend_pattern[0]}']")[0].click()
    until(lambda: at(browser, rf"/dead-letters\?fingerprint={mend_pattern[0]}$"), "the mend pattern's dead letters")
    assert text_of(browser, "count") == "4 dead letter(s) match this filter."
    assert {row[2] for row in table_rows(browser, "dead-letters")} == {"mend"}

    # A look at one of them, and back.
    first = css(browser, "#dead-letters tbody tr")[0].get_attribute("data-id")
    css(browser, f"#dead-letters a[href='/dead-letters/{first}']")[0].click()
    until(lambda: at(browser, rf"/dead-letters/{first}$"), "a dead letter's page")
    assert text_of(browser, "status") == "failed" and "cannot mend" in page_text(browser)
    assert "PermanentError" in text_of(browser, "traceback")
    snapshot(browser, "dead-letter")
    browser.back()
    until(lambda: at(browser, r"fingerprint=") and text_of(browser, "count").startswith("4 "), "the list again")

    # Replay them: the preview names exactly 4; the cause is fixed before confirming.
    by_id(browser, "preview-replay").click()
    until(lambda: at(browser, r"/dead-letters/preview\?action=replay"), "the replay preview")
    assert by_id(browser, "selected-count").get_attribute("data-count") == "4"
    assert text_of(browser, "selected-count") == "4 dead letter(s) selected."
    assert {row[2] for row in table_rows(browser, "sample")} == {"mend"}
    css(browser, "#act input[name=incident]")[0].send_keys(f"INC-{run}: mend fixed")
    snapshot(browser, "preview")
    redis_client().set(SHOP_FLAG, 1, ex=600)  # the operator fixed the cause
    by_id(browser, "confirm").click()
    until(lambda: at(browser, r"/operations/\d+$"), "the replay's operation page")
    assert f"INC-{run}: mend fixed" in page_text(browser)
    until(
        lambda: text_of(browser, "state") == "finished" and text_of(browser, "done") == "4",
        "the page to show the replay finished, 4 done",
    )
    snapshot(browser, "operation")

    # The replayed jobs finish on the worker and their dead letters are resolved.
    until(lambda: all((get_job(job) or {}).get("status") == "completed" for job in mended), "the 4 jobs to complete")
    until(lambda: set(statuses(stage="mend").values()) == {Status.RESOLVED}, "the 4 rows to be resolved")

    # Discard the other cause, by its error text.
    css(browser, "header nav a[href='/dead-letters']")[0].click()
    until(lambda: at(browser, r"/dead-letters$"), "the dead letters list")
    css(browser, "#filter input[name=error]")[0].send_keys("unknown sku")
    css(browser, "#filter button[type=submit]")[0].click()
    until(lambda: at(browser, r"error=unknown\+sku") and text_of(browser, "count").startswith("2 "), "the filter")
    assert text_of(browser, "count") == "2 dead letter(s) match this filter."
    by_id(browser, "preview-discard").click()
    until(lambda: at(browser, r"/dead-letters/preview\?action=discard"), "the discard preview")
    assert text_of(browser, "selected-count") == "2 dead letter(s) selected."
    css(browser, "#act input[name=reason]")[0].send_keys(f"bad catalogue import {run}")
    by_id(browser, "confirm").click()
    until(lambda: "discarded 2 dead letter(s)" in page_text(browser), "the discard's confirmation")
    assert at(browser, r"/dead-letters\?error=unknown\+sku$")
    assert statuses() == {
        **{job: Status.RESOLVED for job in mended},  # untouched by the discard
        **{f"sku-{n}-{run}": Status.DISCARDED for n in range(2)},
    }

    # The audit log says who did what, and why.
    css(browser, "header nav a[href='/audit']")[0].click()
    until(lambda: at(browser, r"/audit$"), "the audit log")
    entries = {row[4]: row for row in table_rows(browser, "audit")}
    assert set(entries) == {"replay", "discard"}, entries
    assert entries["replay"][2] == "otto" and entries["replay"][5] == "4"
    assert entries["replay"][7] == f"INC-{run}: mend fixed"
    assert entries["discard"][2] == "otto" and entries["discard"][5] == "2"
    assert entries["discard"][7] == f"bad catalogue import {run}"
    snapshot(browser, "audit")


CRAFTED_POST = """
const [fields, done] = [arguments[0], arguments[arguments.length - 1]];
const body = new URLSearchParams({...fields, csrf: document.querySelector("input[name=csrf]").value});
fetch("/dead-letters/act", {method: "POST", body, redirect: "manual"})
  .then((answer) => answer.text().then((text) => done([answer.status, text])))
  .catch((error) => done([0, String(error)]));
"""


@SQLITE_ONLY
def test_a_viewer_sees_no_action_and_a_crafted_request_is_refused(browser, console):
    add_rows(*(dead_letter_event(f"v-{n}", message="unknown sku") for n in range(2)))
    ids = [row.id for row in store.rows(RowFilter())]
    before = statuses()

    sign_in(browser, console, "vera")
    browser.get(f"{console}/dead-letters?error=unknown+sku")
    assert text_of(browser, "count") == "2 dead letter(s) match this filter."
    assert not css(browser, "#preview-replay") and not css(browser, "#preview-discard")
    assert "Replay these" not in page_text(browser)
    browser.get(f"{console}/dead-letters/{ids[0]}")
    assert text_of(browser, "status") == "failed"
    assert not css(browser, "#replay-one, #discard-one, #claim")
    browser.get(f"{console}/dead-letters/preview?action=discard&error=unknown+sku")
    assert text_of(browser, "selected-count") == "2 dead letter(s) selected." and not css(browser, "#act")

    # What the page would have sent, with vera's session and its CSRF token: refused on the server.
    browser.get(f"{console}/dead-letters?error=unknown+sku")
    for action, extra in (("discard", {"reason": "crafted"}), ("replay", {"incident": "crafted"})):
        chosen = selection.resolve(action, RowFilter(ids=ids))
        fields = {"action": action, "error": "unknown sku", "digest": chosen.digest, **extra}
        status, text = browser.execute_async_script(CRAFTED_POST, fields)
        assert status == 403, text
        assert f"vera is a viewer: {action.removesuffix('e')}ing needs the operator role" in text
    assert statuses() == before
    assert audit.entries()[1] == 0


@contextmanager
def another_site(html: str) -> Iterator[str]:
    """A page served by another site (localhost is not the console's 127.0.0.1); its URL."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = html.encode()
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Page)
    thread = threading.Thread(target=server.serve_forever, name="another-site", daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@SQLITE_ONLY
def test_a_cross_site_form_post_is_refused(browser, console):
    add_rows(dead_letter_event("x-1", message="unknown sku"))
    (row,) = store.rows(RowFilter())
    digest = selection.resolve("discard", RowFilter(ids=[row.id])).digest

    sign_in(browser, console, "otto")
    (cookie,) = [cookie for cookie in browser.get_cookies() if cookie["name"] == SESSION_COOKIE]
    assert cookie["sameSite"] == "Lax" and cookie["httpOnly"], cookie

    forged = f"""<!doctype html><title>You won a prize</title>
<form method="post" action="{console}/dead-letters/act">
  <input type="hidden" name="action" value="discard">
  <input type="hidden" name="ids" value="{row.id}">
  <input type="hidden" name="digest" value="{digest}">
  <input type="hidden" name="reason" value="forged">
</form>
<script>document.forms[0].submit()</script>"""
    with another_site(forged) as url:
        browser.get(url)
        until(lambda: at(browser, rf"^{re.escape(console)}/"), "the forged form to be submitted to the console")
    assert text_of(browser, "error") == "refused: the request came from another site"
    assert "discarded" not in page_text(browser)
    assert statuses() == {"x-1": Status.FAILED}
    assert audit.entries()[1] == 0
    browser.get(f"{console}/dead-letters")  # and the refusal did not sign otto out
    assert text_of(browser, "signed-in") == "otto (operator)", browser.current_url


@SQLITE_ONLY
def test_a_link_from_another_site_leaves_the_operator_signed_in(browser, console):
    sign_in(browser, console, "otto")
    with another_site(f'<a id="go" href="{console}/dead-letters">the console</a>') as url:
        browser.get(url)
        by_id(browser, "go").click()
        until(lambda: at(browser, rf"^{re.escape(console)}/"), "the link to be followed")
    assert text_of(browser, "signed-in") == "otto (operator)", browser.current_url  # a link arrives signed in
    browser.get(f"{console}/dead-letters")
    assert text_of(browser, "signed-in") == "otto (operator)", browser.current_url


@SQLITE_ONLY
def test_an_operator_corrects_an_input_in_the_page_and_the_replay_runs_with_it(browser, console, shop_worker):
    result = pack.delay({"sku": "OLD-3", "quantity": 1})
    (row,) = until(lambda: store.rows(RowFilter(error="OLD-3")), "the step to be dead-lettered")
    sign_in(browser, console, "otto")
    browser.get(f"{console}/dead-letters/{row.id}")
    by_id(browser, "edit").click()  # the <details> that holds the form
    editor = css(browser, "#edit-form textarea")[0]

    editor.clear()
    editor.send_keys('{"args": [{"sku": "nope", "quantity": 1}], "kwargs": {}}')
    by_id(browser, "replay-edited").click()
    until(lambda: "String should match pattern" in text_of(browser, "error"), "the model's refusal")
    assert statuses() == {row.job_id: Status.FAILED}

    browser.get(f"{console}/dead-letters/{row.id}")
    by_id(browser, "edit").click()
    editor = css(browser, "#edit-form textarea")[0]
    editor.clear()
    editor.send_keys('{"args": [{"sku": "NEW-3", "quantity": 1}], "kwargs": {}}')
    snapshot(browser, "edit")
    by_id(browser, "replay-edited").click()
    until(lambda: "replayed with the edited input" in page_text(browser), "the replay to start")
    assert result.get(timeout=WAIT) == {"packed": "NEW-3", "quantity": 1}
    until(lambda: statuses() == {row.job_id: Status.RESOLVED}, "the dead letter to be resolved")

    browser.get(f"{console}/audit")
    css(browser, "#audit details")[0].click()
    change = css(browser, "#audit pre.diff")[0].text
    assert '-      "sku": "OLD-3"' in change and '+      "sku": "NEW-3"' in change, change


@SQLITE_ONLY
def test_an_admin_resets_an_open_breaker_and_an_operator_cannot(browser, console):
    force("card-service", "open")
    try:
        sign_in(browser, console, "otto")
        browser.get(f"{console}/breakers")
        assert [cells[1] for cells in table_rows(browser, "breakers") if cells[0] == "card-service"] == ["open"]
        assert not css(browser, "#reset-card-service")  # no button for an operator

        browser.execute_script("document.cookie = ''")
        browser.delete_all_cookies()
        sign_in(browser, console, "ada")
        browser.get(f"{console}/breakers")
        by_id(browser, "reset-card-service").click()
        until(lambda: "breaker card-service forced closed" in page_text(browser), "the reset")
        assert status("card-service").state == "closed"
        snapshot(browser, "breakers")
        browser.get(f"{console}/")
        until(lambda: text_of(browser, "service-status") in ("ok", "degraded", "unready"), "the overview")
        snapshot(browser, "overview")
    finally:
        force("card-service", "closed")


@SQLITE_ONLY
def test_the_list_shows_a_new_failure_without_a_reload(browser, console):
    sign_in(browser, console, "vera")
    browser.get(f"{console}/dead-letters")
    assert text_of(browser, "count") == "0 dead letter(s) match."
    browser.execute_script("window.stillThisPage = true")  # gone if the page were loaded again
    add_rows(dead_letter_event("live-1", message="a new failure"))
    until(lambda: text_of(browser, "count") == "1 dead letter(s) match.", "the list to show the new row")
    assert browser.execute_script("return window.stillThisPage") is True
    assert "a new failure" in page_text(browser)
