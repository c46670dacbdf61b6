"""The dashboard in a real browser against a real gateway and node: what a USER key sees and
may do, what an ADMIN key does (retry, drain, batches, keys), live updates without reloads,
a phone-sized screen, and no console error anywhere. Screenshots of every view go to
target/ui-screenshots/ (and the README's to $OBB_UI_README_SHOTS when set)."""
from __future__ import annotations

import json
import re
import time

from conftest import Dashboard, Stack, eventually
from playwright.sync_api import expect

BATCH_LINES = 5


def assert_inputs_labelled(dash: Dashboard) -> None:
    """Every visible field of the page has a <label for> (or is inside one)."""
    unlabelled = dash.page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
        .filter((el) => el.offsetParent !== null && el.labels.length === 0)
        .map((el) => el.outerHTML)""")
    assert not unlabelled, f"fields without a label: {unlabelled}"


def job_row(dash: Dashboard, job_id: str):
    return dash.page.locator(f'tr[data-id="{job_id}"]')


def fact(dash: Dashboard, name: str):
    return dash.page.locator(f'[data-fact="{name}"]')


def job_status(stack: Stack, job_id: str) -> str:
    return stack.call("GET", f"/v1/jobs/{job_id}", stack.admin).json()["status"]


def create_batch(stack: Stack, key: str, lines: int, model: str = "echo") -> str:
    """Uploads a JSONL file of `lines` requests to `model` and makes it a batch, as the
    README's curl lines do, and returns the batch's id."""
    body = "".join(
        json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": model, "messages": [{"role": "user", "content": f"line {i}"}]}}) + "\n"
        for i in range(lines)
    )
    upload = stack.call("POST", "/v1/files", key, data={"purpose": "batch"},
                        files={"file": ("requests.jsonl", body.encode(), "application/jsonl")})
    assert upload.status_code == 200, upload.text
    batch = stack.call("POST", "/v1/batches", key, json={
        "input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"})
    assert batch.status_code == 200, batch.text
    return batch.json()["id"]


def the_node(stack: Stack) -> dict:
    nodes = eventually(lambda: stack.call("GET", "/admin/nodes", stack.admin).json()["data"], "the node to call in")
    assert len(nodes) == 1, nodes
    return nodes[0]


def test_a_user_sees_their_new_job_live_opens_it_and_cancels_it_but_nothing_of_others_or_admins(stack, dashboard):
    others = stack.submit(stack.other_user)
    dashboard.login(stack.user)
    page = dashboard.page
    expect(page.locator("#whoami")).to_contain_text("USER")
    expect(page.get_by_role("link", name="Nodes")).to_have_count(0)
    expect(page.get_by_role("link", name="Keys")).to_have_count(0)
    dashboard.shot("user-overview")

    dashboard.go("jobs")
    expect(page.locator("#jobs-list table, #jobs-list .empty")).to_be_visible()
    expect(page.locator("#filter-key")).to_have_count(0)
    # A mark in the page's memory, which a reload would lose.
    page.evaluate("window.obbTestMark = true")
    job = stack.submit(stack.user)
    # No reload: the row comes from the page's live stream.
    expect(job_row(dashboard, job)).to_be_visible()
    expect(job_row(dashboard, job)).to_contain_text("queued")
    assert page.evaluate("window.obbTestMark === true"), "the page was reloaded"
    expect(job_row(dashboard, others)).to_have_count(0)
    dashboard.shot("user-jobs")

    job_row(dashboard, job).get_by_role("link", name=job).click()
    expect(page).to_have_url(re.compile(f"#/jobs/{job}$"))
    expect(fact(dashboard, "Status")).to_have_text("queued")
    expect(fact(dashboard, "Model")).to_have_text("nobody-serves-this")
    expect(page.locator("pre.json").first).to_contain_text("hello from the dashboard test")
    expect(page.get_by_role("button", name="Set priority")).to_have_count(0)
    dashboard.shot("user-job")

    # By keyboard: Escape closes the dialog and gives the focus back; the job is untouched.
    cancel = page.get_by_role("button", name=f"Cancel job {job}")
    cancel.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)
    expect(cancel).to_be_focused()
    assert job_status(stack, job) == "queued"
    # The dialog opens on its harmless button; Tab reaches the one that cancels.
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog").get_by_role("button", name="Keep")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_role("dialog").get_by_role("button", name="Cancel job")).to_be_focused()
    page.keyboard.press("Enter")
    expect(fact(dashboard, "Status")).to_have_text("cancelled")
    assert job_status(stack, job) == "cancelled"
    # A cancelled job is retryable, but not by a USER key.
    expect(page.get_by_role("button", name=re.compile("^Retry"))).to_have_count(0)

    # An API error reaches the user with its message: another user's job is not found.
    dashboard.allow("status of 404")
    dashboard.go("jobs")
    page.get_by_label("Find a job by id").fill(others)
    page.keyboard.press("Enter")
    refusal = stack.call("GET", f"/v1/jobs/{others}?include=request", stack.user)
    assert refusal.status_code == 404
    expect(page.locator("#job-body .notice.error")).to_have_text(refusal.json()["error"]["message"])

    # The admin views are not reachable by their address either.
    dashboard.go("nodes")
    expect(page).to_have_url(re.compile("#/overview$"))

    # The API refuses what the page hides.
    assert stack.call("GET", "/admin/nodes", stack.user).status_code == 403
    assert stack.call("POST", f"/admin/jobs/{job}/retry", stack.user).status_code == 403
    assert stack.call("GET", f"/v1/jobs/{others}", stack.user).status_code == 404
    listed = [j["id"] for j in stack.call("GET", "/v1/jobs?limit=100", stack.user).json()["data"]]
    assert job in listed and others not in listed


def test_an_admin_retries_an_expired_job_drains_a_node_and_watches_a_batch_progress(stack, dashboard):
    # Retried, the job gets its time to live again (and expires again): long enough to see
    # it queued, short enough for a quick test.
    expired = stack.submit(stack.user, headers={"X-OBB-TTL": "3"})
    eventually(lambda: job_status(stack, expired) == "expired", "the job to expire")
    node = the_node(stack)
    dashboard.login(stack.admin)
    page = dashboard.page
    expect(page.locator("#whoami")).to_contain_text("ADMIN")

    # Retry the expired job from its page.
    dashboard.go(f"jobs/{expired}")
    expect(fact(dashboard, "Status")).to_have_text("expired")
    page.get_by_role("button", name=f"Retry job {expired}").click()
    expect(fact(dashboard, "Status")).to_have_text("queued")
    expect(page.locator(".history")).to_contain_text("retried from expired")
    history = stack.call("GET", f"/v1/jobs/{expired}", stack.admin).json()["events"]
    assert [(e["type"], e["from"]) for e in history] == [("retried", "expired")], history
    dashboard.shot("admin-job-retried")

    # The jobs table shows every key's jobs, with the key.
    dashboard.go("jobs")
    expect(job_row(dashboard, expired)).to_be_visible()
    expect(page.locator("#filter-key")).to_be_visible()
    assert_inputs_labelled(dashboard)
    dashboard.shot("jobs")

    # Drain the node: the page marks it, and the gateway holds its jobs.
    dashboard.go("nodes")
    row = page.locator(f'tr[data-id="{node["id"]}"]')
    expect(row).to_contain_text("alive")
    row.get_by_role("button", name=f"Drain node {node['id']}").click()
    expect(row.locator(".status-draining")).to_have_text("draining")
    expect(row.get_by_role("button", name=f"Undrain node {node['id']}")).to_be_visible()
    assert stack.call("GET", "/admin/nodes", stack.admin).json()["data"][0]["draining"] is True
    dashboard.shot("nodes")

    # The poll repaints the table behind an open dialog; closed, the dialog gives the focus to
    # the button that took its opener's place.
    remove = row.locator(f'button[data-focus="remove:{node["id"]}"]')
    remove.click()
    expect(page.get_by_role("dialog")).to_be_visible()
    remove.evaluate("button => { button.dataset.stale = 'yes'; }")
    expect(row.locator("button[data-stale]")).to_have_count(0)
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)
    expect(remove).to_be_focused()
    assert len(stack.call("GET", "/admin/nodes", stack.admin).json()["data"]) == 1

    # A batch waits behind the drained node; the page shows it at 0 of its lines.
    batch = create_batch(stack, stack.user, BATCH_LINES)
    eventually(lambda: stack.call("GET", f"/v1/batches/{batch}", stack.admin).json()["request_counts"]["total"] == BATCH_LINES,
               "the batch to be validated")
    dashboard.go("batches")
    bar = page.locator(f'tr[data-id="{batch}"] progress')
    expect(bar).to_have_attribute("max", str(BATCH_LINES))
    expect(bar).to_have_attribute("value", "0")

    # Undrained (by HTTP, so that the page stays on the batch), the node runs the lines and
    # the bar moves live.
    page.evaluate("window.obbTestMark = true")
    assert stack.call("POST", f"/admin/nodes/{node['id']}/undrain", stack.admin).status_code == 200
    expect(bar).to_have_attribute("value", str(BATCH_LINES), timeout=30_000)
    assert page.evaluate("window.obbTestMark === true"), "the page was reloaded"
    batch_row = page.locator(f'tr[data-id="{batch}"]')
    expect(batch_row.locator(".badge")).to_have_text("completed", timeout=30_000)
    dashboard.shot("batches")

    # The output file downloads with the key, through a blob URL.
    with page.expect_download() as download:
        batch_row.get_by_role("button", name=re.compile("^Download the output file")).click()
    lines = pathlib_text(download.value.path()).splitlines()
    assert len(lines) == BATCH_LINES and all(json.loads(line)["response"]["status_code"] == 200 for line in lines)

    # A batch that cannot run is cancelled from its row.
    stuck = create_batch(stack, stack.user, 2, model="nobody-serves-this")
    page.get_by_role("button", name="Refresh").click()
    stuck_row = page.locator(f'tr[data-id="{stuck}"]')
    stuck_row.get_by_role("button", name=f"Cancel batch {stuck}").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel batch").click()
    expect(stuck_row.locator(".badge")).to_have_text(re.compile("^cancell(ing|ed)$"))
    expect(stuck_row.get_by_role("button", name=f"Cancel batch {stuck}")).to_have_count(0)

    reprioritize_a_queued_job(stack, dashboard)
    filter_and_page_jobs(stack, dashboard, batch)
    create_key_set_limits_and_revoke(stack, dashboard)

    dashboard.go("overview")
    expect(page.locator('[data-card="nodes-alive"]')).to_have_text("1")
    expect(page.locator('[data-card="completed"]')).not_to_have_text("0")
    dashboard.shot("overview")


def pathlib_text(path) -> str:
    with open(path, encoding="utf-8") as file:
        return file.read()


def reprioritize_a_queued_job(stack: Stack, dashboard: Dashboard) -> None:
    page = dashboard.page
    job = stack.submit(stack.user)
    dashboard.go(f"jobs/{job}")
    expect(fact(dashboard, "Priority")).to_have_text("3")
    assert_inputs_labelled(dashboard)
    page.get_by_label("Priority (1 runs first)").select_option("1")
    page.get_by_role("button", name="Set priority").click()
    expect(fact(dashboard, "Priority")).to_have_text("1")
    expect(page.locator(".history")).to_contain_text("priority 3 → 1")
    assert stack.call("GET", f"/v1/jobs/{job}", stack.admin).json()["priority"] == 1


def filter_and_page_jobs(stack: Stack, dashboard: Dashboard, batch: str) -> None:
    """The jobs table's filters and pages are the server's: by batch, then by key over more
    than one page (Next, then Previous through the cursor stack)."""
    page = dashboard.page
    rows = page.locator("#jobs-list tbody tr")
    dashboard.go("jobs")
    page.get_by_label("Batch", exact=True).fill(batch)
    page.get_by_role("button", name="Apply filters").click()
    expect(rows).to_have_count(BATCH_LINES)
    expect(rows.locator(".badge", has_text="completed")).to_have_count(BATCH_LINES)
    # A finished line's page: its result, node and timings.
    rows.first.get_by_role("link").click()
    expect(fact(dashboard, "Status")).to_have_text("completed")
    expect(page.locator(".json-section", has_text="Result")).to_contain_text("choices")
    expect(fact(dashboard, "Finished")).not_to_have_text("—")
    dashboard.shot("job")
    page.get_by_role("link", name="← Jobs").click()
    expect(rows).to_have_count(BATCH_LINES)

    other_key = stack.call("GET", "/v1/dashboard/whoami", stack.other_user).json()["key_id"]
    jobs = [stack.submit(stack.other_user) for _ in range(21)]
    page.get_by_label("Batch", exact=True).fill("")
    page.get_by_label("Key", exact=True).fill(other_key)
    page.get_by_role("button", name="Apply filters").click()
    expect(rows).to_have_count(20)
    expect(job_row(dashboard, jobs[-1])).to_be_visible()
    expect(rows.filter(has_text=other_key)).to_have_count(20)
    page.get_by_role("button", name="Next →").click()
    expect(page.locator(".pager")).to_contain_text("Page 2")
    expect(job_row(dashboard, jobs[0])).to_be_visible()
    expect(job_row(dashboard, jobs[-1])).to_have_count(0)
    page.get_by_role("button", name="← Previous").click()
    expect(job_row(dashboard, jobs[-1])).to_be_visible()
    expect(page.get_by_role("button", name="← Previous")).to_be_disabled()
    page.get_by_label("Key", exact=True).fill("")
    page.get_by_role("button", name="Apply filters").click()
    expect(job_row(dashboard, jobs[-1])).to_be_visible()


def create_key_set_limits_and_revoke(stack: Stack, dashboard: Dashboard) -> None:
    page = dashboard.page
    dashboard.go("keys")
    page.get_by_label("Name").fill("made-in-the-dashboard")
    page.get_by_label("Role").select_option("user")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator(".secret-value")
    expect(secret).to_have_text(re.compile("^sk-obb-"))
    key = secret.inner_text()
    who = stack.call("GET", "/v1/dashboard/whoami", key).json()
    assert who["role"] == "USER" and who["name"] == "made-in-the-dashboard"
    row = page.locator(f'tr[data-id="{who["key_id"]}"]')
    expect(row).to_contain_text("made-in-the-dashboard")
    dashboard.shot("keys")
    page.get_by_role("button", name="Dismiss").click()
    expect(secret).to_have_count(0)

    # Limits: saved with the dialog's button, and Escape closes the dialog.
    row.get_by_role("button", name=f"Edit the limits of key {who['key_id']}").click()
    # A refused value is explained in the dialog with the API's message, and nothing is kept.
    dashboard.allow("status of 400")
    page.get_by_label("Weight").fill("5000")
    page.get_by_role("button", name="Save limits").click()
    refusal = stack.call("PUT", f"/admin/keys/{who['key_id']}/limits", stack.admin, json={"weight": 5000})
    assert refusal.status_code == 400
    expect(page.get_by_role("dialog").get_by_role("alert")).to_have_text(refusal.json()["error"]["message"])
    page.get_by_label("Weight").fill("3")
    page.get_by_label("Requests per minute").fill("600")
    page.get_by_role("button", name="Save limits").click()
    expect(page.get_by_role("dialog")).to_have_count(0)
    limits = stack.call("GET", f"/admin/keys/{who['key_id']}/limits", stack.admin).json()
    assert limits["weight"] == 3 and limits["requests_per_minute"] == 600, limits
    row.get_by_role("button", name=f"Edit the limits of key {who['key_id']}").click()
    expect(page.get_by_label("Weight")).to_have_value("3")
    assert_inputs_labelled(dashboard)
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)

    row.get_by_role("button", name=f"Revoke key {who['key_id']}").click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke key").click()
    expect(row).to_contain_text("revoked")
    assert stack.call("GET", "/v1/dashboard/whoami", key).status_code == 401


def test_a_refused_key_is_told_why_with_the_api_message(stack, dashboard):
    dashboard.allow("status of 401")
    dashboard.allow("status of 403")
    page = dashboard.page
    dashboard.open()
    expect(page.get_by_label("API key")).to_be_focused()
    assert_inputs_labelled(dashboard)
    page.get_by_label("API key").fill("sk-obb-not-a-key")
    page.get_by_role("button", name="Log in").click()
    message = stack.call("GET", "/v1/dashboard/whoami", "sk-obb-not-a-key").json()["error"]["message"]
    expect(page.locator("#login-error")).to_have_text(message)
    page.get_by_label("API key").fill(stack.node_key)
    page.get_by_role("button", name="Log in").click()
    message = stack.call("GET", "/v1/dashboard/whoami", stack.node_key).json()["error"]["message"]
    expect(page.locator("#login-error")).to_contain_text(message)
    expect(page.locator("#app")).to_be_hidden()
    # The key is never in the address.
    assert "sk-obb" not in page.url


def test_the_key_lives_in_session_storage_only_and_log_out_forgets_it(stack, dashboard):
    page = dashboard.page
    dashboard.login(stack.user)
    dashboard.go("jobs")
    assert page.evaluate("sessionStorage.getItem('obb.key')") == stack.user
    assert page.evaluate("localStorage.length") == 0 and page.evaluate("document.cookie") == ""
    assert stack.user not in page.url
    # A reload in the same tab keeps the session, on the same view.
    page.reload()
    expect(page.locator("#whoami")).to_contain_text("USER")
    expect(page.locator("#jobs-list")).to_be_visible()
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('obb.key')") is None
    page.reload()
    expect(page.get_by_label("API key")).to_be_visible()
    expect(page.locator("#app")).to_be_hidden()


def test_after_an_action_a_jobs_page_shows_the_job_as_it_now_is(stack, dashboard):
    """An action's answer leaves out what it cleared (times, error): the page loads the job
    again. The live stream, which would reload it too, is held unanswered here."""
    page = dashboard.page
    page.route("**/v1/dashboard/events", lambda route: None)
    job = stack.submit(stack.user)
    dashboard.open(f"jobs/{job}")
    page.get_by_label("API key").fill(stack.admin)
    page.get_by_role("button", name="Log in").click()
    expect(fact(dashboard, "Status")).to_have_text("queued")
    expect(fact(dashboard, "Finished")).to_have_text("—")
    page.get_by_role("button", name=f"Cancel job {job}").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel job").click()
    expect(fact(dashboard, "Status")).to_have_text("cancelled")
    expect(fact(dashboard, "Finished")).not_to_have_text("—")
    page.get_by_role("button", name=f"Retry job {job}").click()
    expect(fact(dashboard, "Status")).to_have_text("queued")
    expect(fact(dashboard, "Finished")).to_have_text("—")
    expect(page.locator(".history")).to_contain_text("retried from cancelled")


def test_log_out_forgets_the_jobs_filters_so_a_user_does_not_inherit_an_admins(stack, dashboard):
    page = dashboard.page
    dashboard.login(stack.admin)
    admin_key = stack.call("GET", "/v1/dashboard/whoami", stack.admin).json()["key_id"]
    dashboard.go("jobs")
    page.get_by_label("Key", exact=True).fill(admin_key)
    page.get_by_role("button", name="Apply filters").click()
    expect(page.locator(".filter-box summary")).to_have_text("Filters (on)")
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_label("API key")).to_be_visible()

    dashboard.login(stack.user)
    dashboard.go("jobs")
    expect(page.locator("#jobs-list table, #jobs-list .empty")).to_be_visible()
    # A USER has no key field: "on" would be the admin's key filter, unseen and unchangeable.
    expect(page.locator("#filter-key")).to_have_count(0)
    expect(page.locator(".filter-box summary")).to_have_text("Filters")


def test_a_malformed_job_address_shows_the_jobs_view(stack, dashboard):
    page = dashboard.page
    dashboard.login(stack.user)
    dashboard.go("jobs/%E0")
    expect(page.locator("#jobs-list")).to_be_visible()
    expect(page.get_by_role("link", name="Jobs")).to_have_attribute("aria-current", "page")
    # And as the address the page opens with.
    page.reload()
    expect(page.locator("#jobs-list")).to_be_visible()
    expect(page.locator("#login-error")).to_be_hidden()


def test_a_stream_accepted_and_dropped_at_once_is_retried_with_a_growing_delay(stack, dashboard):
    """Only a stream that gave a frame (or stayed up) resets the reconnect delay: one that the
    server accepts and drops at once is called again after 1, 2, 4 … s, not every second."""
    page = dashboard.page
    calls: list[float] = []

    def accept_and_drop(route) -> None:
        calls.append(time.monotonic())
        route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body="")

    page.route("**/v1/dashboard/events", accept_and_drop)
    dashboard.open()
    page.get_by_label("API key").fill(stack.user)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#whoami")).to_be_visible()
    eventually(lambda: calls or page.wait_for_timeout(50), "the first call to the stream")
    # Calls at 0, 1–1.5 s and 3–4.5 s; the next not before 7 s (every ~1.25 s were the delay
    # reset by each accepted stream).
    page.wait_for_timeout(6000)
    assert 2 <= len(calls) <= 3, [round(t - calls[0], 2) for t in calls]
    expect(page.locator("#live")).to_have_text("reconnecting")


def test_the_jobs_view_fits_a_phone_without_sideways_page_scrolling(stack, phone):
    """At 375×667 only a table's own scroller may scroll sideways, never the page."""
    stack.submit(stack.user)
    phone.login(stack.user)

    def page_width() -> None:
        width, inner = phone.page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width <= inner, f"the page is {width} px wide in a {inner} px window"

    phone.go("jobs")
    expect(phone.page.locator("#jobs-list table")).to_be_visible()
    page_width()
    phone.shot("phone-jobs")
    # The filters start folded on a phone; unfolded, they fit too.
    phone.page.get_by_text("Filters", exact=True).click()
    expect(phone.page.get_by_label("Status")).to_be_visible()
    page_width()
    phone.go("overview")
    expect(phone.page.locator('[data-card="nodes-alive"]')).to_be_visible()
    page_width()
    phone.shot("phone-overview")
