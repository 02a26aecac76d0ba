"""The public page's numbers: weekly aggregates with small cells suppressed (k-anonymity).

A public cell that counts a handful of installs points at people ("1 install on FreeBSD 13").
Every cell that counts fewer than the project's `public_min_installs` (k, default 5) installs,
or whose number of installs is unknown, is withheld: its active installs show as "< k" and its
events are not shown. Withheld cells are left out of every total, so no total minus the shown
cells gives one back.
"""

import datetime as dt
from dataclasses import dataclass

from telemetry.analytics import active
from telemetry.models import Project


@dataclass
class PublicWeek:
    label: str
    active_installs: int | None  # None: withheld
    events: int | None  # None: withheld with its week
    unknown: bool = False  # withheld because the purge left no distinct count for the week

    @property
    def shown(self) -> bool:
        return self.active_installs is not None


@dataclass
class PublicUsage:
    k: int
    weeks: list[PublicWeek]

    @property
    def total_events(self) -> int:
        """Events of the shown weeks only: withheld weeks never enter a total."""
        return sum(w.events or 0 for w in self.weeks if w.shown)

    @property
    def withheld(self) -> int:
        return sum(1 for w in self.weeks if not w.shown)


def weekly_usage(*, project: Project, start: dt.date, end: dt.date) -> PublicUsage:
    k = max(1, project.public_min_installs)
    weeks = []
    for p in active.active_series(project=project, interval="week", start=start, end=end):
        if p.active_installs is None or p.active_installs < k:
            weeks.append(PublicWeek(p.label, None, None, unknown=p.active_installs is None))
        else:
            weeks.append(PublicWeek(p.label, p.active_installs, p.events))
    return PublicUsage(k=k, weeks=weeks)
