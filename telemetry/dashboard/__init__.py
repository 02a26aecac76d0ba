"""The maintainer dashboard: server-rendered pages over telemetry.analytics (no SQL here)."""
