"""Wiring: a Config becomes the outbox, the targets and the dispatcher of one process.

Nothing here opens the database or starts a thread: that happens on first use, after any fork.
"""
import time

from diy.config import ConfigError
from outbox.db import Database
from outbox.dispatcher import Dispatcher
from outbox.retry import RetryPolicy
from outbox.store import Outbox
from targets import load_target_class
from targets.errors import TargetConfigError
from targets.http import HttpClient


class Service:
    def __init__(self, config, *, clock=time.time):
        self.config = config
        self.clock = clock
        self.database = Database(config.database, synchronous=config.synchronous, write_timeout=config.write_timeout)
        self.outbox = Outbox(self.database, retention=config.retention)
        self.http = HttpClient()
        self.targets = {integration.name: build_target(config, integration, self.http) for integration in config.integrations}
        settings = config.dispatcher
        self.dispatcher = Dispatcher(
            self.outbox,
            self.targets,
            threads=settings.threads,
            poll_interval=settings.poll_interval,
            lease=settings.lease,
            policy=RetryPolicy(settings.backoff_base, settings.backoff_cap, settings.max_attempts),
            stop_timeout=settings.stop_timeout,
            clock=clock,
        )

    def close(self):
        self.dispatcher.stop()
        for target in self.targets.values():
            target.close()
        self.http.close()
        self.database.close()


def build_target(config, integration, http):
    where = f"{config.source}: [integration:{integration.name}]"
    try:
        target_class = load_target_class(integration.target)
    except LookupError as error:
        raise ConfigError(f"{where} target: {error}") from None
    try:
        return target_class(integration.target_settings, http)
    except TargetConfigError as error:
        raise ConfigError(f"{where} {error}") from None
