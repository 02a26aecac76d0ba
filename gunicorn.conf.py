"""gunicorn settings: sync workers (bench/servers.py, bench/RESULTS.md); no client IPs in logs."""

import multiprocessing
import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2))
worker_class = "sync"
timeout = 30
keepalive = 5
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", 0))
max_requests_jitter = 100
# The access log line never carries the client address (%(h)s): request line, status, size, time.
accesslog = os.environ.get("ACCESS_LOG") or None
access_log_format = '"%(r)s" %(s)s %(b)s %(M)sms'
errorlog = "-"
