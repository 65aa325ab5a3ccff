"""gunicorn settings for diy-wsgi, behind nginx on one machine.

    DIY_CONFIG=/etc/diy-wsgi/diy.ini gunicorn -c gunicorn.conf.py diy_wsgi:app

Every setting can be overridden from the environment (the variable is named beside it). The
app is loaded in each worker after the fork (no preload_app), so the SQLite outbox is never
opened in the master. Each worker runs its own dispatcher unless the configuration says
`[dispatcher] embedded = no`, in which case run `diy-wsgi dispatch` as a separate service.
"""
import os
import sys

# Where nginx reaches us (DIY_BIND). Keep it on loopback or a unix socket: TLS is nginx's job.
bind = os.environ.get("DIY_BIND", "127.0.0.1:8000")

# Worker processes (DIY_WORKERS). Writes to SQLite are serialised, so more than the number of
# cores buys nothing; two keep one busy while the other waits on the disk.
workers = int(os.environ.get("DIY_WORKERS", "2"))

# Threads per worker (DIY_THREADS): a CREATE_AUDIENCE may wait up to create_timeout for the
# platform, and must not hold up the mutations queued behind it.
worker_class = "gthread"
threads = int(os.environ.get("DIY_THREADS", "4"))

# A request never takes longer than create_timeout (2.5 s by default) plus the write budget.
timeout = int(os.environ.get("DIY_TIMEOUT", "30"))

# On SIGTERM, workers finish their requests and give back their dispatcher leases in this time.
graceful_timeout = int(os.environ.get("DIY_GRACEFUL_TIMEOUT", "20"))
keepalive = 5

# The app logs every request itself, with its request id and without secrets.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("DIY_LOG_LEVEL", "info")


def on_starting(server):
    """Build the app once in the master, before any worker forks, and drop it (building opens no
    database, file or connection): a mistake in the configuration or a target's settings is one
    line and exit status 1, not a traceback from every worker."""
    import diy_wsgi
    from diy.config import ConfigError
    from outbox.errors import StoreError

    try:
        diy_wsgi.make_app(diy_wsgi.load_configured())
    except (ConfigError, StoreError) as error:
        server.log.error("diy-wsgi: %s", error)
        sys.exit(1)


def post_worker_init(worker):
    """Load the configuration and start this worker's dispatcher."""
    import diy_wsgi
    from diy import logs

    config = diy_wsgi.app.load().config
    logs.configure(config.log_level, config.log_format)
    diy_wsgi.app.start()


def worker_exit(server, worker):
    import diy_wsgi

    diy_wsgi.app.stop()
