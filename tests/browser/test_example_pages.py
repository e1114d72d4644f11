"""The example's pages in a real browser: start a job, watch it finish, see a failure."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Server

pytestmark = pytest.mark.timeout(120)


def start_job(page: Page, server: Server, items: int, threads: int) -> None:
    page.goto(server.url)
    page.get_by_label("Items to fetch").fill(str(items))
    page.get_by_label("Threads").fill(str(threads))
    page.get_by_role("button", name="Start the job").click()
    page.wait_for_url(re.compile(r"/jobs/\d+/$"))


def test_the_stylesheet_is_served_and_applied(page: Page, server: Server) -> None:
    page.goto(server.url)
    expect(page).to_have_title("Start a job · djthreads example")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(245, 247, 250)"  # style.css's --page colour


def test_a_job_runs_while_its_page_refreshes_itself_until_done(
    page: Page, server: Server, screenshots: Path
) -> None:
    loads: list[str] = []
    page.on("load", lambda loaded: loads.append(loaded.url))
    # 240 records at 0.1 s each in 8 threads: about 3 s, several refreshes.
    start_job(page, server, items=240, threads=8)
    status_url = page.url
    first = page.locator("#elapsed").inner_text()
    assert re.fullmatch(r"Waiting for a thread to start the job…|Running for \d+\.\d s…", first)

    # Nobody reloads the page here: only its own refresh can bring "Done".
    expect(page.locator("#status")).to_have_text("Done")
    assert loads.count(status_url) >= 2, loads
    expect(page.locator("#summary")).to_have_text("240 / 240 records with 8 threads")
    expect(page.locator("#elapsed")).to_have_text(
        re.compile(r"Finished in \d+\.\d\d s: \d+ records a second\.")
    )
    expect(page.locator("progress")).to_have_attribute("value", "240")
    items = page.locator("table.records tbody tr td:first-child").all_inner_texts()
    assert items == [str(n) for n in range(10)]  # in item order
    expect(page.locator("table.records caption")).to_have_text(
        "The first 10 of 240 stored, by item number; fetched by 8 threads."
    )
    page.screenshot(path=screenshots / "status-done.png", full_page=True)

    page.get_by_role("link", name="← All jobs").click()
    job = re.search(r"/jobs/(\d+)/$", status_url)
    assert job is not None
    row = page.locator("table.jobs tr", has=page.get_by_role("link", name=f"Job {job[1]}"))
    expect(row).to_contain_text("Done")
    expect(row).to_contain_text("240 / 240")
    expect(row).to_contain_text("8 threads")
    page.screenshot(path=screenshots / "start.png", full_page=True)


def test_a_failed_job_says_why_and_keeps_the_detail_folded(
    page: Page, failing_server: Server, refused_source: str, screenshots: Path
) -> None:
    start_job(page, failing_server, items=20, threads=1)
    expect(page.locator("#status")).to_have_text("Failed")
    expect(page.locator("#error")).to_have_text(
        f"Could not connect to the data source at {refused_source}: nothing is listening "
        "there. Start the source, or set HARVEST_SOURCE_URL to one that is running."
    )
    expect(page.locator("#summary")).to_have_text("0 / 20 records with 1 thread")
    detail = page.locator("details pre")
    expect(detail).to_be_hidden()
    page.get_by_text("Technical details").click()
    expect(detail).to_be_visible()
    expect(detail).to_contain_text("ConnectionRefusedError")
    page.screenshot(path=screenshots / "status-failed.png", full_page=True)


def test_a_bad_value_is_refused_with_a_message(page: Page, server: Server) -> None:
    page.goto(server.url)
    page.get_by_label("Threads").fill("0")
    page.get_by_role("button", name="Start the job").click()
    expect(page.get_by_text("Ensure this value is greater than or equal to 1.")).to_be_visible()
    expect(page).to_have_url(f"{server.url}/")
