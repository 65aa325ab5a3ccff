"""The dispatcher: threads that drain the outbox into targets.

One loop thread claims audiences with due work (as many as there are free delivery threads)
and hands each claim to a pool thread, which calls the target and settles the claim. A commit in
this process wakes the loop at once (`wake`); a fourth thread hears of every other process's
commits (PostgreSQL's LISTEN/NOTIFY, SQLite's data_version: `listen` of the backend); polling
finds retries that came due. Retry policy lives here; the outbox only moves rows.

A third thread beats the dispatcher's heart every `takeover_after / BEATS_PER_TAKEOVER`
seconds. A dispatcher whose heartbeat is older than `takeover_after` is presumed dead and its
leases are taken over by the next claim, so a killed process holds its audiences for seconds,
not a whole `lease`; the lease still bounds a live dispatcher's call that hangs.

Why one module of this length: the threads (loop, heart, listener, pool) and the delivery of a
claim share one state, which claims are in flight and whether this dispatcher is stopping or
still beating, and stopping, takeover and settling are only correct read together.
"""
import concurrent.futures
import logging
import os
import random
import secrets
import socket
import threading
import time

from outbox.accounts import Accounts
from outbox.errors import StoreError, StoreUnavailable
from outbox.retry import RetryPolicy
from targets.base import ADD, REMOVE
from outbox.guard import CREDENTIALS_REFUSED
from targets.errors import AudienceGone, CredentialsRefused, PartialFailure, PayloadTooLarge, TargetError, TransientError

log = logging.getLogger("diy.dispatcher")
SETTLE_ATTEMPTS = 8
BEATS_PER_TAKEOVER = 5
"""Heartbeats a dispatcher may miss in a row (a slow disk, a busy database) before others take
its leases over."""
FORGET_DISPATCHERS_AFTER = 3600.0
CREDENTIALS_GAUGE = "diy_account_credentials_refused"
"""1 while a platform refuses an account's credentials (labels integration, account)."""
DELIVERY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


class NoMetrics:
    """What the dispatcher reports to when nobody collects metrics."""

    def count(self, name, labels, value=1):
        pass

    def observe(self, name, labels, seconds, buckets=None, count=1):
        pass

    def set(self, name, labels, value):
        pass


class Dispatcher:
    def __init__(
        self,
        outbox,
        accounts,
        *,
        threads=4,
        poll_interval=1.0,
        lease=300.0,
        takeover_after=5.0,
        policy=RetryPolicy(),
        stop_timeout=10.0,
        maintenance_interval=60.0,
        checkpoint_interval=1.0,
        metrics=None,
        clock=time.time,
        rand=random.random,
    ):
        if threads < 1:
            raise ValueError("threads must be at least 1")
        if takeover_after <= 0:
            raise ValueError("takeover_after must be positive")
        self.outbox = outbox
        self.accounts = {
            name: value if isinstance(value, Accounts) else Accounts.single(name, value, clock)
            for name, value in accounts.items()
        }
        self.threads = threads
        self.poll_interval = poll_interval
        self.lease = lease
        self.takeover_after = takeover_after
        self.heartbeat_interval = takeover_after / BEATS_PER_TAKEOVER
        self.policy = policy
        self.stop_timeout = stop_timeout
        self.maintenance_interval = maintenance_interval
        self.checkpoint_interval = checkpoint_interval
        self.metrics = metrics or NoMetrics()
        self.clock = clock
        self.rand = rand
        self._owner_suffix = secrets.token_hex(3)
        self._named = None
        self.batch_sizes = {name: accounts.max_batch for name, accounts in self.accounts.items()}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._heart_stopping = threading.Event()
        self._in_flight = set()
        self._in_flight_lock = threading.Lock()
        self._calls = {}
        """Claim token -> (integration, monotonic time its platform call times out, or None)."""
        self._loop = None
        self._heart = None
        self._listener = None
        self._pool = None
        self._next_maintenance = 0.0
        self._next_checkpoint = 0.0
        self._beating = True
        self._beaten_at = None
        self._beating_since = None

    @property
    def owner(self):
        """Unique per process (a forked worker gets its own). Threads may ask at once, so the
        name and its pid change together, as one tuple."""
        pid = os.getpid()
        named = self._named
        if named is None or named[0] != pid:
            named = self._named = (pid, f"{socket.gethostname()}:{pid}:{self._owner_suffix}")
        return named[1]

    # Running in the background.

    def start(self, *, beside_requests=False):
        """Start the threads. `beside_requests`: this process also takes requests, whose commits
        wake it directly; it then listens for other processes' commits only where listening
        costs nothing while busy (PostgreSQL), not where it polls (SQLite: a look every 5 ms
        under load, for wakes its own requests already give)."""
        if self._loop is not None:
            return
        self._stopping.clear()
        self._heart_stopping.clear()
        self._pool = concurrent.futures.ThreadPoolExecutor(self.threads, thread_name_prefix="diy-deliver")
        self._loop = threading.Thread(target=self._run, name="diy-dispatcher", daemon=True)
        self._heart = threading.Thread(target=self._beat, name="diy-heartbeat", daemon=True)
        self._heart.start()
        if self.outbox.notifies and (self.outbox.listens_for_free or not beside_requests):
            self._listener = threading.Thread(target=self._listen, name="diy-listen", daemon=True)
            self._listener.start()
        self._loop.start()
        log.info("dispatcher started owner=%s threads=%d integrations=%s takeover_after=%gs database=%s", self.owner,
                 self.threads, ",".join(self.accounts), self.takeover_after, self.outbox.location)

    def wake(self):
        self._wake.set()

    @property
    def alive(self):
        return self._loop is not None and self._loop.is_alive()

    def stop(self, timeout=None):
        """Stop claiming, give in-flight calls `timeout` seconds, then give back unsettled leases.

        A wait for calls in flight is announced (how many, to which integrations, how long their
        platform timeouts may still run), and so are calls still running at the end: their
        batches are delivered again by whichever dispatcher claims them next."""
        if self._loop is None:
            return
        timeout = self.stop_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        self._stopping.set()
        self._wake.set()
        self._loop.join(timeout)
        with self._in_flight_lock:
            in_flight = set(self._in_flight)
        if in_flight:
            integrations, left = self._calls_left()
            log.info("dispatcher stopping owner=%s in_flight=%d integrations=%s longest_call_left=%s stop_timeout=%gs; "
                     "waiting for them", self.owner, len(in_flight), integrations, left, timeout)
        _, unfinished = concurrent.futures.wait(in_flight, max(0.0, deadline - time.monotonic()))
        self._heart_stopping.set()
        for thread in (self._heart, self._listener):
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        self._pool.shutdown(wait=False)
        released = 0
        try:
            released = self.outbox.release(self.owner)
            self.outbox.retire(self.owner)
        except Exception:
            log.exception("could not give back leases owner=%s; they expire by themselves", self.owner)
        if unfinished:
            integrations, left = self._calls_left()
            log.warning("dispatcher stopped with calls still running owner=%s unfinished=%d integrations=%s released=%d "
                        "longest_call_left=%s; their outcome is dropped and their batches are delivered again (the "
                        "process exits once the calls end)", self.owner, len(unfinished), integrations, released, left)
        else:
            log.info("dispatcher stopped owner=%s unfinished=0 released=%d", self.owner, released)
        self._loop = self._heart = self._listener = None

    def _calls_left(self):
        """(the integrations of the platform calls running now, joined by commas; the longest
        time one of them may still run until its timeout, or "unknown")."""
        now = time.monotonic()
        with self._in_flight_lock:
            calls = list(self._calls.values())
        integrations = ",".join(sorted({integration for integration, _ in calls})) or "-"
        ends = [ends_at for _, ends_at in calls if ends_at is not None]
        left = f"{max(0.0, max(ends) - now):.1f}s" if ends and len(ends) == len(calls) else "unknown"
        return integrations, left

    def _beat(self):
        """Beat the heart until stopped, and through a stop's wait for the calls in flight (their
        leases stay this dispatcher's meanwhile); one line when it cannot, and one when it can again."""
        while not self._heart_stopping.is_set():
            try:
                started = time.monotonic()
                self.outbox.heartbeat(self.owner, now=self.clock())
                self._beaten(started)
                if not self._beating:
                    log.info("heartbeat recorded again owner=%s", self.owner)
                self._beating = True
            except Exception as error:
                if self._beating:
                    log.warning("heartbeat not recorded owner=%s reason=%r; after %gs without one, other "
                                "dispatchers take this one's audiences over", self.owner, str(error),
                                self.takeover_after)
                self._beating = False
                self._beating_since = None
            self._heart_stopping.wait(self.heartbeat_interval)

    def _listen(self):
        try:
            self.outbox.listen(self.wake, self._stopping)
        except Exception:
            log.exception("listening for new work failed; polling every %.1fs finds it", self.poll_interval)

    def _run(self):
        """Claim and maintain until stopped. A wake while a claim runs is kept (the event is
        cleared before the claim), so no commit waits for the poll. While the database is away
        the loop pauses: one warning when that begins (and when the reason changes), one line
        when it is back."""
        waiting_for = None
        while True:
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                more = self._claim_and_submit()
                self.maintain()
                if waiting_for is not None:
                    log.info("dispatcher resumed: the database is back owner=%s", self.owner)
                    waiting_for = None
            except StoreUnavailable as error:
                if str(error) != waiting_for:
                    log.warning("dispatcher waiting for the database reason=%r; retrying every %.1fs",
                                str(error), self.poll_interval)
                    waiting_for = str(error)
                more = False
            except Exception:
                log.exception("dispatcher loop failed; retrying in %.1fs", self.poll_interval)
                more = False
            if not more:
                self._wake.wait(self.poll_interval)

    def _claim_and_submit(self):
        """Claim for every free delivery thread; True when they were all filled, so more work
        may be due at once. A claim that filled fewer took all that was due: the loop then waits
        for a wake (a commit, a finished delivery, a notification) or the poll interval."""
        with self._in_flight_lock:
            free = self.threads - len(self._in_flight)
        claims = self._claim(free)
        for claim in claims:
            future = self._pool.submit(self.deliver, claim)
            with self._in_flight_lock:
                self._in_flight.add(future)
            future.add_done_callback(self._finished)
        return free > 0 and len(claims) == free

    def _finished(self, future):
        with self._in_flight_lock:
            self._in_flight.discard(future)
        self._wake.set()

    def _claim(self, limit):
        """Claim up to `limit` audiences; the claim beats the heart too unless the heart thread
        did within the last beat interval (a lease is then fresh for most of takeover_after).

        Leases of dispatchers whose heartbeat is stale are taken over only once this one has
        beaten without a miss for `takeover_after` itself: when the database was away (a
        restart, a failover), every heartbeat went stale at once, the live ones' too, and each
        gets that long to beat again before anyone presumes it dead."""
        now, started = self.clock(), time.monotonic()
        beaten_at, beating_since = self._beaten_at, self._beating_since
        beat = beaten_at is None or started - beaten_at >= self.heartbeat_interval
        takes_over = beating_since is not None and started - beating_since >= self.takeover_after
        try:
            claims = self.outbox.claim(
                self.owner, now=now, lease=self.lease, limit=limit, batch_sizes=self.batch_sizes,
                alive_since=now - self.takeover_after if takes_over else None, beat=beat,
            )
        except StoreUnavailable:
            self._beating_since = None
            raise
        if beat and claims:
            self._beaten(started)
        return claims

    def _beaten(self, at):
        """A heartbeat started at `at` (time.monotonic()) was recorded."""
        self._beaten_at = at
        if self._beating_since is None:
            self._beating_since = at

    def maintain(self):
        """Background checkpoints (so no request's commit pays for one), and now and then the
        retention purge, forgetting long-dead dispatchers and emptying a WAL that outgrew its limit."""
        now = self.clock()
        if now >= self._next_checkpoint:
            self._next_checkpoint = now + self.checkpoint_interval
            self.outbox.checkpoint(truncate=False)
        if now < self._next_maintenance:
            return
        self._next_maintenance = now + self.maintenance_interval
        purged = self.outbox.purge(now=now)
        if purged:
            log.info("purged delivered mutations count=%d", purged)
        self.outbox.forget_dispatchers(seen_before=now - FORGET_DISPATCHERS_AFTER)
        if self.outbox.trim_wal():
            log.info("wal emptied: it had outgrown its size limit (readers kept SQLite from starting it afresh)")

    # One round in the calling thread, for tests and tools.

    def run_once(self):
        """Claim what is due now and deliver it in this thread; returns how many claims ran."""
        claims = self._claim(self.threads)
        for claim in claims:
            self.deliver(claim)
        return len(claims)

    # Delivering one claim.

    def deliver(self, claim):
        """Create the audience or deliver the batch, then settle the claim; never raises."""
        audience = claim.audience
        try:
            accounts = self.accounts[audience.integration]
            account = accounts.for_customer(audience.customer)
            if account is None:
                self._refuse(claim, accounts.missing(audience.customer))
            elif audience.state == "failed":
                self._refuse(claim, f"audience {audience.dmp_id} could not be created: {audience.last_error}")
            else:
                self._call_guarded(claim, account)
        except Exception:
            log.exception(
                "delivery crashed integration=%s audience=%s; the lease expires and it is tried again",
                audience.integration,
                audience.key,
            )

    def _call_guarded(self, claim, account):
        wait = account.guard.admit()
        if wait:
            self._count(claim, "held")
            now = self.clock()
            log.debug("held back account=%s audience=%s for=%.2fs", account.label, claim.audience.key, wait)
            self._settle(claim, self.outbox.postpone, claim, at=now + wait, now=now)
            return
        outcome, refusal, change = "other", None, None
        started = time.monotonic()
        timeout = getattr(account.target, "timeout", None)
        with self._in_flight_lock:
            self._calls[claim.token] = (claim.audience.integration, started + timeout if timeout else None)
        try:
            try:
                if claim.audience.state == "creating":
                    outcome = self._create(claim, account.target)
                else:
                    outcome = self._deliver_mutations(claim, account.target)
            except CredentialsRefused as error:
                outcome, refusal = "unauthorized", error
        finally:
            with self._in_flight_lock:
                self._calls.pop(claim.token, None)
            change = account.guard.release(outcome, claim.audience.id)
            self.metrics.observe(
                "diy_delivery_call_seconds", (("integration", claim.audience.integration),),
                time.monotonic() - started, DELIVERY_BUCKETS,
            )
        self.credentials_changed(claim.audience.integration, account, change, refusal)
        if refusal is not None:
            self._hold_refused(claim, account, refusal)
        elif outcome == "transient" and account.guard.breaker.state == "open":
            log.warning("circuit open account=%s for=%.0fs", account.label, account.guard.breaker.cooldown)

    def _hold_refused(self, claim, account, refusal):
        """The platform refused the account's credentials: nothing is wrong with this claim, so
        it waits, without an attempt counted, until the breaker lets a trial call through."""
        self._count(claim, "unauthorized")
        now = self.clock()
        log.debug("held: credentials refused account=%s audience=%s reason=%r", account.label, claim.audience.key,
                  refusal.message)
        self._settle(claim, self.outbox.postpone, claim, at=now + account.guard.breaker.held_for, now=now)

    def credentials_changed(self, integration, account, change, refusal=None):
        """Say it loudly, once, when a platform starts or stops refusing an account's credentials
        (`change` from Guard.release or Guard.record; None: nothing to say), and keep the
        CREDENTIALS_GAUGE that /readyz and `diy-wsgi status` read."""
        if change is None:
            return
        refused = change == CREDENTIALS_REFUSED
        labels = (("integration", integration), ("account", account.label))
        self.metrics.set(CREDENTIALS_GAUGE, labels, 1 if refused else 0)
        if refused:
            log.error("credentials refused account=%s reason=%r; its work is held (no attempt counted, nothing "
                      "dead-lettered) and one call is tried again in %.0fs: fix the credentials and it resumes by itself",
                      account.label, refusal.message if refusal else "", account.guard.breaker.held_for)
        else:
            log.warning("credentials accepted again account=%s; its held work resumes", account.label)

    def check_target_id(self, integration, dmp_id, target_id):
        """Warn when the platform answered the creation of `dmp_id` with an id that another
        audience already has (a platform that forgot its audiences, such as a restarted test
        platform): the users of both would reach one platform audience. Call it once the
        mapping is stored."""
        try:
            known = [other for other in self.outbox.audiences_of_target(integration, target_id) if other != dmp_id]
        except StoreError as error:
            log.debug("audience id not checked integration=%s audience=%s reason=%r", integration, dmp_id, str(error))
            return
        for other in known:
            log.warning("audience id clash integration=%s audience=%s known_audience=%s target_id=%s; the platform "
                        "answered the new audience with the known one's id, so both audiences' users reach one "
                        "platform audience (was the platform reset?)", integration, dmp_id, other, target_id)

    def _refuse(self, claim, reason):
        """Work that no call can do: a creation fails, a batch is dead-lettered, with `reason`."""
        audience = claim.audience
        log.error("refused integration=%s audience=%s reason=%r", audience.integration, audience.key, reason)
        if audience.state == "creating":
            self._settle(claim, self.outbox.creation_failed, claim, reason, now=self.clock())
        else:
            self._settle(claim, self.outbox.dead_letter, claim, reason, now=self.clock())

    def _create(self, claim, target):
        audience = claim.audience
        try:
            target_id = target.create_audience(audience.for_target())
        except TransientError as error:
            self._count(claim, "retry")
            self._retry(claim, error.message, error.retry_after)
            return "transient"
        except CredentialsRefused:
            raise
        except TargetError as error:
            self._count(claim, "refused")
            log.error("audience refused integration=%s audience=%s reason=%r", audience.integration, audience.dmp_id, error.message)
            self._settle(claim, self.outbox.creation_failed, claim, error.message, now=self.clock())
            return "ok"
        except Exception as error:
            log.exception("create_audience crashed integration=%s audience=%s", audience.integration, audience.dmp_id)
            self._retry(claim, f"{type(error).__name__} in the target: {error}", None)
            return "other"
        self._count(claim, "created")
        log.info("audience created integration=%s audience=%s target_id=%s", audience.integration, audience.dmp_id, target_id)
        if self._settle(claim, self.outbox.created, claim, str(target_id), now=self.clock()):
            self.check_target_id(audience.integration, audience.dmp_id, str(target_id))
        self.wake()
        return "ok" if target.creates_on_the_platform else "other"

    def _deliver_mutations(self, claim, target):
        audience = claim.audience
        latest = coalesce(claim.mutations)
        started = time.monotonic()
        try:
            dead = self._send(target, audience.for_target(), latest)
        except TransientError as error:
            self._count(claim, "retry")
            self._retry(claim, error.message, error.retry_after)
            return "transient"
        except AudienceGone as error:
            log.warning("audience gone integration=%s audience=%s reason=%r; recreating it", audience.integration, audience.key, error.message)
            self._settle(claim, self.outbox.recreate, claim, error.message, now=self.clock())
            self.wake()
            return "ok"
        except CredentialsRefused:
            raise
        except TargetError as error:
            self._count(claim, "dead")
            self._count_mutations(claim, "dead", len(claim.mutations))
            log.error(
                "batch dead-lettered integration=%s audience=%s mutations=%d reason=%r",
                audience.integration, audience.key, len(claim.mutations), error.message,
            )
            self._settle(claim, self.outbox.dead_letter, claim, error.message, now=self.clock())
            return "ok"
        except Exception as error:
            log.exception("target crashed integration=%s audience=%s", audience.integration, audience.key)
            self._retry(claim, f"{type(error).__name__} in the target: {error}", None)
            return "other"
        if self._settle(claim, self.outbox.settle, claim, dead=dead, now=self.clock()):
            self._observe_delivered(claim, dead)
        log.info(
            "delivered integration=%s audience=%s mutations=%d sent=%d dead=%d ms=%.0f",
            audience.integration, audience.key, len(claim.mutations), len(latest), len(dead),
            (time.monotonic() - started) * 1000,
        )
        for mutation_id, reason in dead.items():
            log.error("mutation dead-lettered integration=%s audience=%s id=%d reason=%r", audience.integration, audience.key, mutation_id, reason)
        return "ok"

    def _count(self, claim, result):
        self.metrics.count("diy_deliveries_total", (("integration", claim.audience.integration), ("result", result)))

    def _count_mutations(self, claim, result, count):
        if count:
            labels = (("integration", claim.audience.integration), ("result", result))
            self.metrics.count("diy_delivered_mutations_total", labels, count)

    def _observe_delivered(self, claim, dead):
        self._count(claim, "partial" if dead else "delivered")
        self._count_mutations(claim, "delivered", len(claim.mutations) - len(dead))
        self._count_mutations(claim, "dead", len(dead))
        now = self.clock()
        labels = (("integration", claim.audience.integration),)
        for received_at, count in claim.received.values():
            self.metrics.observe(
                "diy_delivery_latency_seconds", labels, max(0.0, now - received_at), DELIVERY_BUCKETS, count=count
            )

    def _send(self, target, audience, mutations):
        """Call the target for removals and additions; returns {mutation id: reason} of refusals.

        After coalescing each user appears once, so removals and additions touch different users
        and their relative order does not matter. A claim of one large stored batch may exceed
        the target's `max_batch`: it is sent in calls of at most that many.
        """
        dead = {}
        for call, op in ((target.remove_users, REMOVE), (target.add_users, ADD)):
            batch = [m for m in mutations if m.op == op]
            for start in range(0, len(batch), target.max_batch):
                dead.update(call_splitting(call, audience, batch[start:start + target.max_batch]))
        return dead

    def _retry(self, claim, reason, retry_after):
        audience = claim.audience
        attempts = audience.attempts + 1
        now = self.clock()
        if self.policy.exhausted(attempts):
            reason = f"gave up after {attempts} attempts: {reason}"
            log.error("giving up integration=%s audience=%s reason=%r", audience.integration, audience.key, reason)
            if audience.state == "creating":
                self._settle(claim, self.outbox.creation_failed, claim, reason, now=now)
            else:
                self._settle(claim, self.outbox.dead_letter, claim, reason, now=now)
            return
        delay = self.policy.delay(attempts, retry_after, self.rand)
        log.warning(
            "will retry integration=%s audience=%s attempt=%d in=%.1fs reason=%r",
            audience.integration, audience.key, attempts, delay, reason,
        )
        self._settle(claim, self.outbox.retry_later, claim, reason, at=now + delay, now=now)

    def _settle(self, claim, record, *args, **kwargs):
        """Record a claim's outcome, retrying while the database is busy: the platform call is
        done, and an outcome dropped now would be sent again once the lease runs out."""
        for attempt in range(SETTLE_ATTEMPTS):
            try:
                settled = record(*args, **kwargs)
                break
            except StoreUnavailable as error:
                if attempt == SETTLE_ATTEMPTS - 1:
                    raise
                log.warning("settle postponed integration=%s audience=%s reason=%r", claim.audience.integration,
                            claim.audience.key, str(error))
                self._stopping.wait(min(0.1 * 2 ** attempt, 5.0))
        if not settled and self._stopping.is_set():
            log.info("outcome dropped integration=%s audience=%s: this dispatcher is stopping and no longer holds the "
                     "lease; the batch is delivered again", claim.audience.integration, claim.audience.key)
        elif not settled:
            log.warning(
                "lease lost integration=%s audience=%s: another dispatcher took it over; its outcome was dropped",
                claim.audience.integration, claim.audience.key,
            )
        return settled


def coalesce(mutations):
    """The last mutation of each user, in id order: it alone decides the final membership."""
    latest = {}
    for mutation in mutations:
        latest.pop(mutation.external_user_id, None)
        latest[mutation.external_user_id] = mutation
    return list(latest.values())


def call_splitting(call, audience, batch):
    """Call the target; on 413 split the batch in halves. Returns {mutation id: reason}."""
    try:
        call(audience, batch)
        return {}
    except PartialFailure as error:
        ids = {m.id for m in batch}
        return {mutation_id: reason for mutation_id, reason in error.failed.items() if mutation_id in ids}
    except PayloadTooLarge as error:
        if len(batch) == 1:
            return {batch[0].id: error.message}
        half = len(batch) // 2
        return {**call_splitting(call, audience, batch[:half]), **call_splitting(call, audience, batch[half:])}
