"""The sandbox (diy/sandbox) in process, as the target tests, the contract suite and the
service tests drive it: the tests' one fake platform.

`Sandboxed` is a sandbox started by the `sandboxed` fixture (tests/conftest.py: 127.0.0.1,
port 0, in a thread) plus the one thing tests need that the product does not: every platform
call it answered, kept through `Sandbox.listeners`. Faults, refusals, credentials and state are
the sandbox's own (`.sandbox`); what follows only reads them the way the tests ask (each
target's settings, the members, the calls), and `hold_calls` puts its fault mode on and off.
"""
import json
import time
from collections import namedtuple
from urllib.parse import parse_qsl

TOKEN_PATH = "/oauth2/token"
Recorded = namedtuple("Recorded", "method path query headers body")
"""One request as received: `body` parsed (JSON, or the form of a token request with the
client secret masked; None when neither)."""


class Sandboxed:
    def __init__(self, server):
        self.server, self.sandbox, self.url = server, server.sandbox, server.url
        self.exchanges = []
        self.sandbox.listeners.append(self.exchanges.append)

    def calls(self, api):
        """The `Exchange`s of one platform, in the order they were answered."""
        return [exchange for exchange in self.exchanges if exchange.api == api]

    def bodies(self, api):
        """The parsed JSON body of each call (None when not JSON), faulted and refused ones too."""
        return [_json_or_none(exchange.request.body) for exchange in self.calls(api)]

    def recorded(self, api):
        """A `Recorded` per call of one platform, in order."""
        return [_recorded(exchange.request) for exchange in self.calls(api)]

    def refusals(self, api):
        """(status, message) of each call the platform itself refused whole."""
        return [(e.reply.status, e.refusal.message) for e in self.calls(api) if e.refusal is not None]

    def fail_next(self, status, times=1, headers=None, body=None, *, after=0, token=None, creates=None):
        self.sandbox.faults.fail_next(status, times, headers, body, after=after, token=token, creates=creates)


def webhook_settings(sandboxed):
    """The `target.*` settings (prefix cut) of a WebhookTarget delivering to the sandbox."""
    return {"url": f"{sandboxed.url}/webhook", "secret": sandboxed.sandbox.webhook.secret, "timeout": "5"}


def webhook_members(sandboxed, audience_id):
    """The members of the webhook audience of this receiver id (or DMP id)."""
    for dmp_id, audience in sandboxed.sandbox.state.snapshot()["webhook"].items():
        if audience_id in (audience["id"], dmp_id):
            return set(audience["members"])
    return set()


class Receiver:
    """The sandbox's webhook as the service tests read it (the `receiver_for` fixture): `script`
    statuses answer the first calls (each with `Retry-After: retry_after` when given), then the
    webhook answers."""

    def __init__(self, sandboxed, script=(), retry_after=None):
        self.sandboxed, self.url = sandboxed, webhook_settings(sandboxed)["url"]
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        for status in script:
            sandboxed.fail_next(status, headers=headers, body={"error": "scripted failure"})

    def answered(self):
        """The calls the webhook itself answered 200 (duplicates too), in order."""
        return [e for e in self.sandboxed.calls("webhook") if e.reply.status == 200 and e.fault in (None, "hold")]

    @property
    def events(self):
        return [json.loads(e.request.body) for e in self.answered()]

    @property
    def ids(self):
        return [e.request.header("webhook-id") for e in self.answered()]

    @property
    def calls(self):
        return len(self.sandboxed.calls("webhook"))

    @property
    def members(self):
        """{DMP audience id: set of members} of every audience the webhook knows."""
        audiences = self.sandboxed.sandbox.state.snapshot()["webhook"]
        return {dmp_id: set(audience["members"]) for dmp_id, audience in audiences.items()}

    def created_ids(self):
        """The ids the webhook answered audience.created with."""
        return [json.loads(e.reply.body)["id"] for e in self.answered()
                if json.loads(e.request.body)["type"] == "audience.created"]


class _Flag:
    """What tests wait on (`wait`, `is_set`) or set (`set`), as with a threading.Event."""

    def __init__(self, check=lambda: False, act=lambda: None):
        self.check, self.act = check, act

    def is_set(self):
        return self.check()

    def wait(self, timeout):
        deadline = time.monotonic() + timeout
        while not self.check() and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.check()

    def set(self):
        self.act()


def hold_calls(sandboxed, status=None, mode="hold"):
    """The sandbox's fault mode `mode` until `release.set()`: returns (held, release), `held`
    set once a call is held. "hold": creations pass, the others wait and are then applied and
    answered (the first of them `status` instead, when given); "hang": every call waits and is
    then closed unanswered."""
    faults, stats = sandboxed.sandbox.faults, sandboxed.sandbox.stats
    if status is not None:
        faults.fail_next(status, creates=False)
    faults.change({"mode": mode})
    held = _Flag(lambda: faults.held > 0 or stats.snapshot()["faults"]["hang"] > 0)
    return held, _Flag(act=lambda: faults.change({"mode": None}))


def ttd_settings(sandboxed, signature=False):
    """The `target.*` settings of a TheTradeDeskTarget: its token, or with `signature` its
    secret (and the data provider's, when the sandbox has one)."""
    ttd = sandboxed.sandbox.thetradedesk
    settings = {"base_url": sandboxed.url, "advertiser_id": ttd.advertiser_id, "timeout": "5"}
    if not signature:
        return {**settings, "token": ttd.token}
    settings.update(auth="signature", secret=ttd.secret)
    if ttd.data_provider_id is not None:
        settings.update(data_provider_id=ttd.data_provider_id, data_provider_secret=ttd.data_provider_secret)
    return settings


def ttd_members(sandboxed):
    """{segment name: set of TDIDs} of the segments that have members."""
    segments = sandboxed.sandbox.state.snapshot()["thetradedesk"]
    return {name: set(segment["members"]) for name, segment in segments.items() if segment["members"]}


def criteo_settings(sandboxed):
    """The `target.*` settings of a CriteoTarget on the sandbox's app and advertiser (GUM ids)."""
    criteo = sandboxed.sandbox.criteo
    return {"base_url": sandboxed.url, "client_id": criteo.client_id, "client_secret": criteo.client_secret,
            "advertiser_id": criteo.advertiser_id, "identifier_type": "gum", "gum_caller_id": "123"}


def criteo_segments(sandboxed):
    """{segment id: name} of every Criteo segment."""
    return {id_: segment["name"] for id_, segment in sandboxed.sandbox.state.snapshot()["criteo"].items()}


def criteo_members(sandboxed):
    """{segment id: set of identifiers} of every Criteo segment."""
    return {id_: set(segment["members"]) for id_, segment in sandboxed.sandbox.state.snapshot()["criteo"].items()}


def criteo_api_calls(sandboxed):
    """A `Recorded` per Criteo call but the token requests."""
    return [recorded for recorded in sandboxed.recorded("criteo") if recorded.path != TOKEN_PATH]


def criteo_token_requests(sandboxed):
    return sum(1 for exchange in sandboxed.calls("criteo") if exchange.request.path == TOKEN_PATH)


def criteo_violations(sandboxed):
    """What Criteo would refuse as malformed: a 400, an unknown route, a call without a Bearer
    token (an expired or revoked token, another advertiser or segment are no fault of the request)."""
    return [(e.reply.status, e.refusal.message) for e in sandboxed.calls("criteo") if e.refusal is not None
            and (e.reply.status == 400 or getattr(e.refusal, "code", "") == "route-not-found"
                 or (e.reply.status == 401 and e.request.path != TOKEN_PATH
                     and not (e.request.header("authorization") or "").startswith("Bearer ")))]


def _recorded(request):
    if request.path == TOKEN_PATH:
        form = dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
        body = {**form, **({"client_secret": "***"} if "client_secret" in form else {})}
    else:
        body = _json_or_none(request.body)
    return Recorded(request.method, request.path, request.query, request.headers, body)


def _json_or_none(raw):
    try:
        return json.loads(raw)
    except ValueError:
        return None
