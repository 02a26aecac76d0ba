"""Secrets shown once: a new ingest key or operator token waits in the server-side session for
the one page that shows it, which takes it out as it renders.

Never in a URL, a cookie, a message or a log line; a reload finds nothing. Items left unseen for
longer than MAX_AGE are dropped on the next visit.
"""

import time

SESSION_KEY = "telemetry_reveal"
MAX_AGE = 600  # seconds


def stash(request, *, project, label: str, secret: str) -> None:
    """Keep `secret` for the next page that calls `take`."""
    items = request.session.get(SESSION_KEY, [])
    items.append(
        {
            "project_id": project.pk,
            "slug": project.slug,
            "label": label,
            "kind": label.lower().replace(" ", "-"),
            "secret": secret,
            "at": time.time(),
        }
    )
    request.session[SESSION_KEY] = items


def take(request, *, project=None) -> list[dict]:
    """The waiting secrets (of `project` only, when given), removed from the session."""
    items = request.session.get(SESSION_KEY)
    if not items:
        return []
    fresh = [i for i in items if time.time() - i["at"] < MAX_AGE]
    mine = [i for i in fresh if project is None or i["project_id"] == project.pk]
    rest = [i for i in fresh if i not in mine]
    if rest:
        request.session[SESSION_KEY] = rest
    else:
        del request.session[SESSION_KEY]
    return mine


def waiting(request) -> bool:
    return bool(request.session.get(SESSION_KEY))
