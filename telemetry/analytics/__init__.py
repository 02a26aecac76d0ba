"""Analytics selectors: read-only functions over the rollups (and, for breakdowns and errors,
over events' properties bounded by a date range). Views and the API call these; nothing here writes.
"""
