"""Every console page, as a browser sees it: no script or style blocked by the Content-Security-Policy, no
JavaScript error, one `<h1>`, a label on every field, and every control reachable by keyboard."""

from __future__ import annotations

from typing import Any

from browser_kit import owner_page, shot

# Every page a signed-in Owner reaches with nothing but the first start (ids of the root org and first Owner).
PAGES = [
    "/console/account",
    "/console/org/1/users",
    "/console/org/1/users?user=1",
    "/console/org/1/orgs",
]

UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea')]
  .filter(el => el.type !== 'hidden' && !el.hidden)
  .filter(el => el.labels.length === 0 && !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby'))
  .map(el => el.outerHTML)"""

UNREACHABLE = """() => [...document.querySelectorAll('a[href], button, input, select, textarea, summary')]
  .filter(el => el.type !== 'hidden' && !el.hidden && !el.disabled && el.tabIndex < 0)
  .map(el => el.outerHTML)"""


def test_every_page_passes_the_audit(page: Any, hub: Any) -> None:
    owner_page(page, hub)
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    for path in PAGES:
        response = page.goto(path)
        assert response is not None and response.status == 200, path
        assert page.locator("h1").count() == 1, path
        assert page.evaluate(UNLABELLED) == [], path
        assert page.evaluate(UNREACHABLE) == [], path
        shot(page, "audit-" + path.strip("/").replace("/", "-").replace("?", "-").replace("=", "-"))
    assert problems == []


def test_the_focused_control_is_visibly_marked(page: Any, hub: Any) -> None:
    owner_page(page, hub)
    page.keyboard.press("Tab")  # the skip link comes first
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Tab")
    shadow = page.evaluate("getComputedStyle(document.activeElement).boxShadow")
    assert shadow and shadow != "none"
