"""Run one request from many threads at once, as concurrent clients would."""

from concurrent.futures import ThreadPoolExecutor

from django.db import connections


def burst(n, send):
    """Run `send(i)` from n threads at once; every thread closes its own DB connection."""

    def one(i):
        try:
            return send(i)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))
