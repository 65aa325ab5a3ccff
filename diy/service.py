"""Wiring: a Config becomes the outbox, the targets and the dispatcher of one process.

Nothing here opens the database or starts a thread: that happens on first use, after any fork.
"""
import threading
import time

from diy.config import ConfigError
from diy.metrics import API_DEPRECATED_GAUGE, API_DEPRECATION_NOTICES, Metrics
from outbox.accounts import Account, Accounts
from outbox.backends import open_database
from outbox.clock import clock_of
from outbox.guard import Guard
from outbox.dispatcher import Dispatcher
from outbox.retry import RetryPolicy
from outbox.store import Outbox
from targets import load_target_class
from targets.errors import TargetConfigError
from targets.http import HttpClient


class Service:
    def __init__(self, config, *, clock=None):
        """`clock` (default: the database's, see outbox/clock.py) dates everything stored."""
        self.config = config
        self.database = open_database(config.database, synchronous=config.synchronous,
                                      write_timeout=config.write_timeout, password=config.database_password)
        self.clock = clock = clock or clock_of(self.database)
        self.outbox = Outbox(self.database, retention=config.retention)
        self.metrics = Metrics(config.metrics_dir)
        self.http = HttpClient()
        share = fair_share(config)
        applications = {}
        self.accounts = {
            i.name: build_accounts(config, i, self.http, clock, share, self.metrics, applications)
            for i in config.integrations
        }
        settings = config.dispatcher
        self.dispatcher = Dispatcher(
            self.outbox,
            self.accounts,
            threads=settings.threads,
            poll_interval=settings.poll_interval,
            lease=settings.lease,
            takeover_after=settings.takeover_after,
            policy=RetryPolicy(settings.backoff_base, settings.backoff_cap, settings.max_attempts),
            stop_timeout=settings.stop_timeout,
            metrics=self.metrics,
            clock=clock,
        )

    def close(self):
        self.dispatcher.stop()
        self.metrics.flush()
        for accounts in self.accounts.values():
            for account in accounts.all():
                account.target.close()
        self.http.close()
        self.database.close()


LEASE_PER_TIMEOUT = 2


def fair_share(config):
    """Calls in flight one account may hold by default: an equal share of the delivery threads,
    so a platform that hangs cannot take every thread from the others."""
    accounts = sum(max(1, len(i.accounts)) for i in config.integrations)
    return max(1, config.dispatcher.threads // accounts)


def build_accounts(config, integration, http, clock, share, metrics=None, applications=None):
    """The integration's accounts: one shared, or one per `[integration:NAME:customer:ID]`.

    `applications` ({(target class, application): (first target, its guard's bucket)}, shared by
    every integration) makes accounts of one platform application share its rate limit.
    """
    applications = {} if applications is None else applications
    section = f"integration:{integration.name}"
    try:
        target_class = load_target_class(integration.target)
    except LookupError as error:
        raise ConfigError(f"{config.source}: [{section}] target: {error}") from None
    rate = integration.calls_per_second or documented_rate(target_class)
    documented = getattr(target_class, "concurrent_calls", None)
    concurrent = integration.concurrent_calls or min(filter(None, (documented, share)))

    def account(label, where, settings):
        try:
            target = target_class(settings, http)
        except TargetConfigError as error:
            raise ConfigError(f"{config.source}: [{where}] {error}") from None
        check_lease(config, where, target)
        guard = Guard(
            clock, calls_per_second=rate, concurrent_calls=concurrent,
            breaker_failures=integration.breaker_failures, breaker_cooldown=integration.breaker_cooldown,
        )
        share_application(applications, target_class, target, guard)
        if metrics is not None:
            target.on_api_deprecated = deprecation_reporter(metrics, integration.name, label)
        return Account(label, target, guard)

    if not integration.accounts:
        return Accounts(integration.name, account(integration.name, section, integration.target_settings))
    return Accounts(integration.name, by_customer={
        customer: account(f"{integration.name}/customer:{customer}", f"{section}:customer:{customer}", settings)
        for customer, settings in integration.accounts.items()
    })


class SharedBucket:
    """One TokenBucket for the guards of several accounts (each guard locks only itself)."""

    def __init__(self, bucket):
        self._bucket = bucket
        self._lock = threading.Lock()

    def wait(self):
        with self._lock:
            return self._bucket.wait()


def share_application(applications, target_class, target, guard):
    """Accounts whose targets name one platform application (Criteo: one client_id, whose
    250 calls a minute all its accounts share) get one rate limit, and the later targets use
    the first one's per-application state (its token cache)."""
    key = getattr(target, "application", None)
    if key is None or guard.bucket is None:
        return
    first, bucket = applications.setdefault((target_class, key), (target, SharedBucket(guard.bucket)))
    if first is not target:
        target.share_application(first)
    guard.bucket = bucket


def deprecation_reporter(metrics, integration, account):
    """What a target calls for each answer deprecating its API version: a counter, and a gauge
    `diy-wsgi status` shows while this process lives (so a version changed by a restart
    stops being shown)."""
    def report(api_version, sunset):
        labels = (("integration", integration), ("account", account), ("api_version", api_version))
        metrics.count(API_DEPRECATION_NOTICES, labels)
        metrics.set(API_DEPRECATED_GAUGE, labels + (("sunset", sunset),), 1)
    return report


def check_lease(config, where, target):
    """A lease that runs out while its delivery is still calling the platform lets another
    dispatcher send the same batch at the same time; two platform timeouts leave room for one
    call that hangs to the end and the settle after it."""
    timeout = getattr(target, "timeout", None)
    lease = config.dispatcher.lease
    if timeout and lease < LEASE_PER_TIMEOUT * timeout:
        raise ConfigError(
            f"{config.source}: [dispatcher] lease ({lease:g}s) must be at least {LEASE_PER_TIMEOUT} times "
            f"target.timeout of [{where}] ({timeout:g}s), or a batch whose platform call hangs is sent "
            "again by another dispatcher while the first call still runs"
        )


def documented_rate(target_class):
    per_second = getattr(target_class, "calls_per_second", None)
    per_minute = getattr(target_class, "calls_per_minute", None)
    return per_second or (per_minute / 60 if per_minute else None)
