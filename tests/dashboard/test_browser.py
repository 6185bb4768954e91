"""The dashboard in a real Chromium: every page, the filters, live updates, and each action,
against a real server with a real worker. Screenshots of each page go to artifacts/dashboard
(ignored by git); every page is scanned by axe-core in the light and the dark scheme."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

PAGES = {
    "overview": "/ui",
    "jobs": "/ui/jobs",
    "dead-letters": "/ui/dead",
    "queues": "/ui/queues",
    "workers": "/ui/workers",
    "schedules": "/ui/schedules",
}


def enqueue(base: str, kind: str, **fields: Any) -> int:
    response = httpx.post(f"{base}/jobs", json={"kind": kind, **fields}, timeout=10)
    assert response.status_code == 201, response.text
    job_id: int = response.json()["id"]
    return job_id


def status_of(base: str, job_id: int) -> str:
    status: str = httpx.get(f"{base}/jobs/{job_id}", timeout=10).json()["status"]
    return status


def until_status(base: str, job_id: int, wanted: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (now := status_of(base, job_id)) != wanted:
        assert time.monotonic() < deadline, f"job {job_id} is {now}, not {wanted}"
        time.sleep(0.05)


def sign_in(page: Any, base: str, key: str = "admin-key") -> None:
    page.goto(f"{base}/ui")
    assert "/ui/login" in page.url
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/ui")


def test_every_page_opens_with_no_serious_accessibility_violation(
    page: Any, keyed_server: str, axe_script: Path, screenshots: Path
) -> None:
    base = keyed_server
    done = enqueue(base, "noop")
    failed = enqueue(base, "fails_once")
    until_status(base, done, "succeeded")
    until_status(base, failed, "failed")
    sign_in(page, base)
    pages = {**PAGES, "job": f"/ui/jobs/{failed}", "login": "/ui/login"}
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        for name, path in pages.items():
            response = page.goto(f"{base}{path}")
            assert response.status == 200, f"{path}: {response.status}"
            assert page.locator("main h1").count() == 1
            page.screenshot(path=str(screenshots / f"{name}-{scheme}.png"), full_page=True)
            page.add_script_tag(path=str(axe_script))
            found = page.evaluate(
                "async () => (await axe.run(document)).violations"
                ".filter(v => ['serious', 'critical'].includes(v.impact))"
                ".map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', '))"
            )
            assert found == [], f"{path} ({scheme}): {found}"
    # Each page's weight: the HTML with its stylesheet and script.
    for path in pages.values():
        html = httpx.get(f"{base}{path}", cookies=_cookies(page), timeout=10).content
        assert len(html) + _asset_bytes(base) <= 150_000, path


def _cookies(page: Any) -> dict[str, str]:
    return {c["name"]: c["value"] for c in page.context.cookies()}


def _asset_bytes(base: str) -> int:
    return sum(
        len(httpx.get(f"{base}/ui/static/{name}", timeout=10).content)
        for name in ("app.css", "app.js")
    )


def test_swagger_ui_loads_from_the_package(page: Any, keyed_server: str) -> None:
    outside: list[str] = []
    page.on(
        "request",
        lambda r: outside.append(r.url) if not r.url.startswith(keyed_server) else None,
    )
    page.goto(f"{keyed_server}/docs")
    page.locator(".swagger-ui .info .title").wait_for()
    assert "jobq" in page.locator(".swagger-ui .info .title").inner_text()
    assert outside == []


def test_filter_jobs_and_jump_to_an_id(page: Any, keyed_server: str) -> None:
    base = keyed_server
    failed = enqueue(base, "fails_once", queue="filters")
    ok = enqueue(base, "noop", queue="filters")
    until_status(base, failed, "failed")
    until_status(base, ok, "succeeded")
    sign_in(page, base)
    page.goto(f"{base}/ui/jobs")
    page.get_by_label("Status").select_option("failed")
    page.get_by_label("Queue").fill("filters")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**status=failed**")
    rows = page.locator("#job-rows tr")
    assert rows.count() == 1
    assert rows.first.locator("a").inner_text() == str(failed)
    page.get_by_label("Job id").fill(str(ok))
    page.get_by_role("button", name="Open").click()
    page.wait_for_url(f"{base}/ui/jobs/{ok}")
    assert page.locator("#job-status").inner_text() == "succeeded"


def test_the_jobs_list_updates_itself_without_reloading(page: Any, keyed_server: str) -> None:
    base = keyed_server
    sign_in(page, base)
    page.goto(f"{base}/ui/jobs?queue=live")
    page.evaluate("window.stillTheSamePage = true")
    job = enqueue(base, "noop", queue="live")
    page.locator(f'#job-rows a:text-is("{job}")').wait_for()
    page.locator("#job-rows .badge.succeeded").wait_for()
    assert page.evaluate("window.stillTheSamePage") is True


def test_a_job_page_shows_its_progress_bar_moving(page: Any, keyed_server: str) -> None:
    base = keyed_server
    job = enqueue(base, "stepper")
    until_status(base, job, "running")
    sign_in(page, base)
    page.goto(f"{base}/ui/jobs/{job}")
    page.wait_for_function("document.getElementById('job-progress').value > 0")
    first = page.evaluate("document.getElementById('job-progress').value")
    page.wait_for_function(f"document.getElementById('job-progress').value > {first}")
    # When it finishes, the page shows the result without being told to.
    page.locator("#job-status.succeeded").wait_for(timeout=30_000)
    assert "stepped" in page.locator("pre").nth(1).inner_text()


def test_retry_a_failed_job_and_see_it_succeed(page: Any, keyed_server: str) -> None:
    base = keyed_server
    job = enqueue(base, "fails_once")
    until_status(base, job, "failed")
    sign_in(page, base)
    page.goto(f"{base}/ui/jobs/{job}")
    assert "the first run of this job fails" in page.locator(".timeline").inner_text()
    page.get_by_role("button", name="Retry job").click()
    page.locator("#job-status.succeeded").wait_for(timeout=30_000)
    assert status_of(base, job) == "succeeded"


def test_cancel_a_running_job(page: Any, keyed_server: str) -> None:
    base = keyed_server
    job = enqueue(base, "runs_until_cancelled")
    until_status(base, job, "running")
    sign_in(page, base)
    page.goto(f"{base}/ui/jobs/{job}")
    page.get_by_role("button", name="Cancel job").click()
    page.locator("#job-status.cancelled").wait_for(timeout=30_000)
    assert status_of(base, job) == "cancelled"


def test_pause_a_queue_then_resume_it(page: Any, keyed_server: str) -> None:
    base = keyed_server
    sign_in(page, base)
    page.goto(f"{base}/ui/queues")
    page.get_by_label("Pause a queue by name").fill("mail")
    page.get_by_role("button", name="Pause", exact=True).click()
    page.get_by_role("status").filter(has_text="Queue mail paused").wait_for()
    held = enqueue(base, "noop", queue="mail")
    # Enqueued after the held job, in a queue that is not paused: once it has run, the
    # worker has claimed since the held job was waiting.
    control = enqueue(base, "noop", queue="default")
    until_status(base, control, "succeeded")
    assert status_of(base, held) == "queued"
    page.goto(f"{base}/ui/jobs/{held}")
    assert page.locator("#job-status").inner_text() == "queued"
    page.goto(f"{base}/ui/queues")
    row = page.locator("tr", has=page.locator('th:text-is("mail")'))
    assert "paused" in row.inner_text()
    row.get_by_role("button", name="Resume mail").click()
    page.get_by_role("status").filter(has_text="Queue mail resumed").wait_for()
    until_status(base, held, "succeeded")


def test_requeue_from_the_dead_letters(page: Any, keyed_server: str) -> None:
    base = keyed_server
    job = enqueue(base, "fails_once", queue="dlq")
    until_status(base, job, "failed")
    sign_in(page, base)
    page.goto(f"{base}/ui/dead?queue=dlq")
    page.get_by_label(f"Select job {job}").check()
    page.get_by_role("button", name="Requeue selected…").click()
    page.get_by_role("heading", name="Requeue 1 job?").wait_for()
    page.get_by_role("button", name="Yes, requeue 1").click()
    page.get_by_role("status").filter(has_text="Requeued 1 of 1 jobs").wait_for()
    until_status(base, job, "succeeded")


def test_a_key_without_jobs_manage_sees_no_buttons_and_cannot_post(
    page: Any, keyed_server: str
) -> None:
    base = keyed_server
    failed = enqueue(base, "fails_once", queue="readonly")
    running = enqueue(base, "runs_until_cancelled", queue="readonly")
    until_status(base, failed, "failed")
    until_status(base, running, "running")
    sign_in(page, base, key="reader-key")
    for path in (f"/ui/jobs/{failed}", f"/ui/jobs/{running}", "/ui/dead", "/ui/queues"):
        page.goto(f"{base}{path}")
        # Action buttons are the ones that POST; Filter and Open only read.
        buttons = page.locator('main form[method="post"] button')
        assert buttons.count() == 0, f"{path}: {buttons.all_inner_texts()}"
        assert page.locator('main input[type="checkbox"]').count() == 0
    # A forged POST with the session's own valid CSRF token: refused for want of the scope.
    token = page.locator('header input[name="csrf"]').get_attribute("value")
    for path, form in (
        (f"/ui/jobs/{running}/cancel", {"csrf": token}),
        (f"/ui/jobs/{failed}/retry", {"csrf": token}),
        ("/ui/queues/readonly/pause", {"csrf": token}),
        ("/ui/dead/apply", {"csrf": token, "action": "requeue", "ids": str(failed)}),
    ):
        response = page.request.post(f"{base}{path}", form=form, max_redirects=0)
        assert response.status == 403, path
    assert status_of(base, running) == "running"
    assert status_of(base, failed) == "failed"
    cancel = httpx.post(f"{base}/jobs/{running}/cancel", timeout=10)
    assert cancel.status_code in (200, 202)


def test_a_post_without_the_csrf_token_is_refused(page: Any, keyed_server: str) -> None:
    base = keyed_server
    sign_in(page, base)
    response = page.request.post(f"{base}/ui/queues/mail/pause", form={}, max_redirects=0)
    assert response.status == 403
    response = page.request.post(
        f"{base}/ui/queues/mail/pause", form={"csrf": "forged"}, max_redirects=0
    )
    assert response.status == 403


@pytest.mark.parametrize("path", list(PAGES.values()))
def test_signed_out_visitors_are_sent_to_sign_in(page: Any, keyed_server: str, path: str) -> None:
    page.goto(f"{keyed_server}{path}")
    assert "/ui/login" in page.url
    assert page.get_by_label("API key").is_visible()


def test_a_tenant_bound_key_sees_only_its_tenant(page: Any, keyed_server: str) -> None:
    base = keyed_server
    ours = enqueue(base, "noop", tenant="acme", queue="tenants")
    theirs = enqueue(base, "noop", tenant="other", queue="tenants")
    page.goto(f"{base}/ui/login")
    page.get_by_label("API key").fill("tenant-key")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/ui/jobs")
    assert page.get_by_label("Tenant").input_value() == "acme"
    shown = page.locator("#job-rows tr a").all_inner_texts()
    assert str(ours) in shown and str(theirs) not in shown
    assert page.goto(f"{base}/ui/jobs/{theirs}").status == 404
    assert page.goto(f"{base}/ui/jobs/{ours}").status == 200
    for path in ("/ui", "/ui/queues", "/ui/workers", "/ui/schedules"):
        assert page.goto(f"{base}{path}").status == 403, path


def test_readable_at_200_percent_zoom_and_from_the_keyboard(page: Any, keyed_server: str) -> None:
    base = keyed_server
    sign_in(page, base)
    # 200 % zoom of a 1280-pixel window: a 640-pixel layout viewport.
    page.set_viewport_size({"width": 640, "height": 450})
    for path in PAGES.values():
        page.goto(f"{base}{path}")
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px"
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        page.keyboard.press("Enter")
        assert page.evaluate("location.hash") == "#main"
