"""The contract suite's adapters: how to drive each target on its enforcing fake, the sandbox
(diy/sandbox, in process: tests/sandboxed.py).

An adapter (`Platform`) knows, for one target:

    name                the builtin target name, also the test id
    max_batch           the most members one call may carry; the fake refuses more
    lacks               {capability: why the target has none}; a case needing it is skipped
    target(**over)      the target on the fake, clock injected; `over` replaces settings
    wrong_credentials   settings the fake refuses as unauthenticated
    credentials()       every credential value, none of which may appear in a message
    user(n)             a valid external user id for the platform
    members(id)         the members the platform holds for the audience with that target id
    member_batches()    how many members each add/remove call the fake received carried
    calls()             API calls the fake received (token requests not counted)
    violations()        what the fake refused as malformed or unauthenticated
    fail_next(...)      the fake's scripted fault for the next API calls
    throttle_headers(s) the headers of a 429 that say "try again in s seconds", platform-worded
    refusal_body(r)     a 4xx body giving the reason `r` the way the platform words it
    refuse(users)       partial_failures: the platform refuses these users, accepts the rest
    refuse_credentials()  the platform stops accepting the target's credentials (rotated or
                        revoked on its side), as it answers such calls: 401 or 403
    accept_credentials()  ... and accepts them again (the operator fixed it)
    revoke_tokens()     token_refresh: every access token issued so far stops working
    token_requests()    token_refresh: how many tokens were asked for

`Pipeline` puts the real Outbox and Dispatcher in front of one target, on the test's clock.
"""
import dataclasses

import pytest

from outbox.dispatcher import Dispatcher
from outbox.store import ReceivedMutation
from targets.base import Audience, Mutation
from targets.criteo import CriteoTarget
from targets.http import HttpClient
from targets.thetradedesk import TheTradeDeskTarget
from targets.webhook import WebhookTarget
from tests.sandboxed import (
    criteo_api_calls, criteo_members, criteo_settings, criteo_token_requests, criteo_violations, ttd_members,
    ttd_settings, webhook_members, webhook_settings,
)

INTEGRATION = "contract"
AUDIENCE = Audience(INTEGRATION, "a5940e473cea659.356693871497425011", "Summer buyers", 42)


class Platform:
    """The base of the adapters; see the module docstring."""

    name = ""
    max_batch = 0
    target_class = None
    wrong_credentials = {}
    lacks = {}

    def __init__(self, request, clock, http):
        self.clock, self.http = clock, http
        self.fake = self.make_fake(request)

    def make_fake(self, request):
        raise NotImplementedError

    def settings(self):
        return self.fake.settings()

    def target(self, **overrides):
        settings = {**self.settings(), **overrides}
        return self.target_class(settings, self.http, clock=self.clock)

    def require(self, capability):
        if capability in self.lacks:
            pytest.skip(f"{self.name}: {self.lacks[capability]}")

    @staticmethod
    def user(n):
        """A 36-character UUID: The Trade Desk's TDID, and an id every other platform takes."""
        return f"df2df528-e032-4851-b7c6-{n:012d}"

    def fail_next(self, status, times=1, headers=None, body=None):
        self.fake.fail_next(status, times=times, headers=headers, body=body)

    def throttle_headers(self, seconds):
        return {"Retry-After": str(seconds)}

    def members(self, target_id):
        return set(self.fake.members.get(target_id, set()))

    def calls(self):
        return len(self.fake.requests)

    def violations(self):
        return list(self.fake.violations)


class WebhookPlatform(Platform):
    name = "webhook"
    max_batch = 1000
    target_class = WebhookTarget
    wrong_credentials = {"secret": "whsec_d3Jvbmcta2V5LW5vdC10aGUtcmVjZWl2ZXJz"}
    lacks = {
        "partial_failures": "a receiver answers each event whole; Standard Webhooks has no per-member refusal",
        "token_refresh": "requests are HMAC-signed with a shared secret; there is no token to refresh",
    }

    def make_fake(self, request):
        return request.getfixturevalue("sandboxed")(clock=self.clock, webhook_max_members=self.max_batch)

    def settings(self):
        return webhook_settings(self.fake)

    def refuse_credentials(self):
        """The receiver's secret rotated without us: its signature check answers 401."""
        webhook = self.fake.sandbox.webhook
        self.secret, webhook.secret = webhook.secret, self.wrong_credentials["secret"]

    def accept_credentials(self):
        self.fake.sandbox.webhook.secret = self.secret

    def credentials(self):
        return [self.fake.sandbox.webhook.secret, self.wrong_credentials["secret"]]

    def members(self, target_id):
        return webhook_members(self.fake, target_id)

    def member_batches(self):
        return [len(body["data"]["members"]) for body in self.fake.bodies("webhook")
                if isinstance(body, dict) and "members" in body.get("data", {})]

    def calls(self):
        return len(self.fake.calls("webhook"))

    def violations(self):
        """Refused as malformed or unsigned: every refusal but a 413 (the receiver's size limit)."""
        return [refusal for refusal in self.fake.refusals("webhook") if refusal[0] != 413]

    @staticmethod
    def refusal_body(reason):
        return {"error": reason}


class TheTradeDeskPlatform(Platform):
    name = "thetradedesk"
    max_batch = 10_000
    target_class = TheTradeDeskTarget
    wrong_credentials = {"token": "wrong-ttd-token"}
    lacks = {
        "token_refresh": "TTD-Auth is a long-lived Data API token (or an HMAC signature); nothing to refresh",
    }

    def make_fake(self, request):
        return request.getfixturevalue("sandboxed")(clock=self.clock)

    def settings(self):
        return ttd_settings(self.fake)

    def refuse_credentials(self):
        """The Data API token revoked at TTD: TTD-Auth answers 401."""
        ttd = self.fake.sandbox.thetradedesk
        self.token, ttd.token = ttd.token, "a-token-issued-since"

    def accept_credentials(self):
        self.fake.sandbox.thetradedesk.token = self.token

    def credentials(self):
        return [self.fake.sandbox.thetradedesk.token, self.wrong_credentials["token"]]

    def members(self, target_id):
        return ttd_members(self.fake).get(target_id, set())

    def member_batches(self):
        return [len(body["Items"]) for body in self.fake.bodies("thetradedesk")
                if isinstance(body, dict) and "Items" in body]

    def calls(self):
        return len(self.fake.calls("thetradedesk"))

    def violations(self):
        """Every request refused whole."""
        return self.fake.refusals("thetradedesk")

    @staticmethod
    def refusal_body(reason):
        return reason

    def refuse(self, users):
        self.fake.sandbox.thetradedesk.refuse(users)


class CriteoPlatform(Platform):
    name = "criteo"
    max_batch = 50_000
    target_class = CriteoTarget
    wrong_credentials = {"client_secret": "wrong-criteo-secret"}

    def make_fake(self, request):
        return request.getfixturevalue("sandboxed")(clock=self.clock)

    def settings(self):
        return criteo_settings(self.fake)

    def fail_next(self, status, times=1, headers=None, body=None):
        self.fake.fail_next(status, times=times, headers=headers, body=body, token=False)

    def refuse_credentials(self):
        """The app's client secret rotated at Criteo: its tokens stop working (401) and the old
        secret gets no new one (401 invalid_client)."""
        criteo = self.fake.sandbox.criteo
        self.client_secret, criteo.client_secret = criteo.client_secret, "a-secret-issued-since"
        criteo.revoke_tokens()

    def accept_credentials(self):
        self.fake.sandbox.criteo.client_secret = self.client_secret

    def credentials(self):
        return [self.fake.sandbox.criteo.client_secret, self.wrong_credentials["client_secret"]]

    def members(self, target_id):
        return criteo_members(self.fake).get(target_id, set())

    def member_batches(self):
        return [len(recorded.body["data"]["attributes"]["identifiers"]) for recorded in criteo_api_calls(self.fake)
                if recorded.method == "PATCH"]

    def throttle_headers(self, seconds):
        """Criteo's own hint: the rate-limit headers, the reset an absolute Unix time."""
        return {"x-ratelimit-limit": "250", "x-ratelimit-remaining": "0",
                "x-ratelimit-reset": str(int(self.clock() + seconds))}

    def calls(self):
        return len(criteo_api_calls(self.fake))

    def violations(self):
        return criteo_violations(self.fake)

    @staticmethod
    def refusal_body(reason):
        return {"errors": [{"traceIdentifier": "trace-1", "type": "validation", "code": "invalid-request",
                            "instance": "/contract", "title": "Invalid request", "detail": reason}],
                "warnings": []}

    def refuse(self, users):
        self.fake.sandbox.criteo.invalid(users)

    def revoke_tokens(self):
        self.fake.sandbox.criteo.revoke_tokens()

    def token_requests(self):
        return criteo_token_requests(self.fake)


PLATFORMS = [WebhookPlatform, TheTradeDeskPlatform, CriteoPlatform]


@pytest.fixture
def http():
    client = HttpClient(timeout=5.0)
    yield client
    client.close()


@pytest.fixture(params=PLATFORMS, ids=[platform.name for platform in PLATFORMS])
def platform(request, clock, http):
    return request.param(request, clock, http)


def created(target, audience=AUDIENCE):
    """`audience` as the platform knows it: created there, with the platform's id."""
    return dataclasses.replace(audience, target_id=target.create_audience(audience))


def mutations(op, *users, first_id=1):
    return [Mutation(first_id + n, op, user, customer=AUDIENCE.customer) for n, user in enumerate(users)]


class Pipeline:
    """The real Outbox and Dispatcher delivering to one target, on the test's clock."""

    def __init__(self, outbox, target, clock):
        self.outbox, self.target, self.clock = outbox, target, clock
        self.dispatcher = Dispatcher(outbox, {INTEGRATION: target}, clock=clock, rand=lambda: 0.0)

    def ready(self, audience=AUDIENCE):
        """Create the audience on the platform and record it, as a CREATE_AUDIENCE request does."""
        target_id = self.target.create_audience(audience)
        self.outbox.record_created(INTEGRATION, audience.dmp_id, name=audience.name, customer=audience.customer,
                                   target_id=target_id, key=audience.dmp_id, now=self.clock())
        return target_id

    def enqueue(self, op, users, audience=AUDIENCE):
        received = [ReceivedMutation(audience.dmp_id, user, customer=audience.customer) for user in users]
        self.outbox.enqueue(INTEGRATION, op, received, pass_through=False, now=self.clock())

    def run_once(self):
        return self.dispatcher.run_once()

    def drain(self, rounds=50):
        """Run round by round, moving the clock past any backoff, until nothing is due."""
        for _ in range(rounds):
            if not self.run_once():
                self.clock.advance(1.0)
                if not self.run_once():
                    return
        raise AssertionError(f"still delivering after {rounds} rounds")

    def mutation_ids(self):
        """{external user id: mutation id} of every mutation in the outbox."""
        return {user: mutation_id for mutation_id, user in
                self.outbox.database.read("SELECT id, external_user_id FROM mutations ORDER BY id")}

    def dead_letters(self):
        """{mutation id: reason} of the dead-lettered mutations."""
        return {row[0]: row[-1] for row in self.outbox.dead_letters(INTEGRATION, limit=100_000)}

    def counts(self):
        return self.outbox.counts(INTEGRATION)

    def audience(self, audience=AUDIENCE):
        """The outbox's record of `audience` (state, attempts, last error)."""
        return self.outbox.audience(INTEGRATION, audience.dmp_id)


@pytest.fixture
def pipeline(outbox, clock):
    """pipeline(target): the real Dispatcher in front of `target`."""
    return lambda target: Pipeline(outbox, target, clock)
