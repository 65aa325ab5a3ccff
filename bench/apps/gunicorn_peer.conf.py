"""gunicorn settings for the other contenders: the same as the project's gunicorn.conf.py
(gthread, DIY_WORKERS workers x DIY_THREADS threads, keepalive 5, no access log), minus its hooks."""
import os

bind = os.environ["DIY_BIND"]
workers = int(os.environ.get("DIY_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("DIY_THREADS", "4"))
timeout = 30
graceful_timeout = 20
keepalive = 5
accesslog = None
errorlog = "-"
loglevel = "info"
