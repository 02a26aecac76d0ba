"""Forms of the dashboard: the date range, the breakdown query and the events filter."""

import datetime as dt

from django import forms

from telemetry.analytics.periods import MAX_DAYS


class RangeForm(forms.Form):
    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self):
        data = super().clean()
        start, end = data.get("start"), data.get("end")
        if start and end and start > end:
            raise forms.ValidationError("The start must be on or before the end.")
        return data

    def range(self, *, today: dt.date, default_days: int = 30) -> tuple[dt.date, dt.date]:
        """The chosen [start, end] (clamped to MAX_DAYS), or the last `default_days` days."""
        data = self.cleaned_data if self.is_valid() else {}
        end = data.get("end") or today
        start = data.get("start") or end - dt.timedelta(days=default_days - 1)
        start = max(start, end - dt.timedelta(days=MAX_DAYS - 1))
        return start, end


METRIC_CHOICES = [
    ("events", "events (map values summed)"),
    ("installs", "distinct installs"),
    ("sum", "sum of…"),
    ("avg", "average of…"),
    ("p50", "median of…"),
    ("p95", "95th percentile of…"),
]


class BreakdownForm(RangeForm):
    property = forms.CharField(
        max_length=200, initial="name", help_text="e.g. environment.os, name, app_version"
    )
    metric = forms.ChoiceField(choices=METRIC_CHOICES, initial="events", required=False)
    metric_path = forms.CharField(max_length=200, required=False, help_text="for sum/avg/p50/p95")
    interval = forms.ChoiceField(
        choices=[("", "no series"), ("day", "day"), ("week", "week"), ("month", "month")],
        required=False,
    )

    def metric_value(self) -> str:
        kind = self.cleaned_data.get("metric") or "events"
        if kind in ("events", "installs"):
            return kind
        return f"{kind}:{self.cleaned_data.get('metric_path', '')}"


class EventFilterForm(RangeForm):
    name = forms.CharField(max_length=64, required=False)
    install_id = forms.CharField(max_length=64, required=False)
    app_version = forms.CharField(max_length=64, required=False, label="Version")
    page = forms.IntegerField(min_value=1, max_value=10_000, required=False)
