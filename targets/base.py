"""The contract between the outbox and a platform: a target creates audiences and moves users.

A target is a class with this shape (subclassing `Target` is the easy way to get it):

    class MyTarget(Target):
        max_batch = 1000                       # most mutations one add/remove call accepts
        calls_per_second = None                # the platform's documented rate limit, if any
        concurrent_calls = None                # most calls in flight it tolerates, if known
        creates_on_the_platform = True         # False if create_audience only names the audience
        application = None                     # set per instance when accounts share a rate limit

        def __init__(self, settings, http):    # `target.*` keys of the integration, prefix cut
            ...                                # raise TargetConfigError(key, why) on bad ones

        def create_audience(self, audience):   # -> the platform's id for it (a string)
        def add_users(self, audience, mutations):
        def remove_users(self, audience, mutations):

Every call is made from a dispatcher thread (or, for `create_audience`, from a request within the
creation budget); several calls may run at once on one instance, so keep shared state
thread-safe. A call returns normally when the platform accepted everything and raises one of
`targets.errors` otherwise; any other exception is treated like a `TransientError`.

Accounts whose targets give the same `application` (a hashable, e.g. Criteo's client_id) share
one rate limit in the dispatcher, and each later one is handed the first with
`share_application(first)` to share what it keeps per application (a token cache). The service
sets `on_api_deprecated(api_version, sunset)` on every target: a target calls it for each answer
saying the platform deprecated the API version in use (the sunset date, or ""), and /metrics
and `diy-wsgi status` show it.

Calls are repeated after failures and crashes (delivery is at least once), so they must be safe
to repeat: adding a member twice or removing a non-member must do no harm.
"""
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Hashable, Mapping, NamedTuple, Optional, Sequence

ADD = "add"
REMOVE = "remove"


@dataclass(frozen=True)
class Audience:
    """A DMP audience (segment) as one integration knows it."""

    integration: str
    dmp_id: str
    name: Optional[str]
    """What the marketer typed; None for an audience first seen in a mutation."""
    customer: Optional[Any]
    """The DMP client (an integer in practice) that owns the audience."""
    target_id: Optional[str] = None
    """The platform's id, once the audience exists there."""


class Mutation(NamedTuple):
    """One user entering (`op == "add"`) or leaving (`"remove"`) an audience. (A named tuple,
    not a dataclass: the dispatcher makes one per delivered mutation.)"""

    id: int
    """The outbox row id: unique, and increasing in the order the DMP sent the mutations."""
    op: str
    external_user_id: str
    """The platform's own user id, learned by the DMP through cookie sync."""
    uuid: Optional[str] = None
    customer: Optional[Any] = None
    platform: Optional[Any] = None
    extra: Mapping[str, Any] = MappingProxyType({})
    """Fields the DMP sent that diy-wsgi does not know, kept as received (read-only)."""


class Target:
    """Base class of the platform modules; see the module docstring for the contract."""

    max_batch = 1000
    calls_per_second: Optional[float] = None
    concurrent_calls: Optional[int] = None
    creates_on_the_platform = True
    """False when `create_audience` calls nothing and only names the audience (The Trade Desk):
    its success then says nothing about the platform, e.g. whether it accepts our credentials."""
    application: Optional[Hashable] = None
    """What the platform counts its rate limit against when several accounts may share it (Criteo:
    the API app); None: each account is on its own."""
    on_api_deprecated: Optional[Callable[[str, str], None]] = None
    """Set by the service; see the module docstring."""

    def __init__(self, settings: Mapping[str, str], http):
        self.settings = settings
        self.http = http

    def create_audience(self, audience: Audience) -> str:
        raise NotImplementedError

    def add_users(self, audience: Audience, mutations: Sequence[Mutation]) -> None:
        raise NotImplementedError

    def remove_users(self, audience: Audience, mutations: Sequence[Mutation]) -> None:
        raise NotImplementedError

    def share_application(self, first: "Target") -> None:
        """Use what `first` (a target with the same `application`) keeps per application."""

    def close(self) -> None:
        """Release what the target holds (connections are the shared client's, not its own)."""
