"""How the sandbox is set up: where it listens, the credentials it accepts, the faults it injects.

The default credentials are public on purpose (the sandbox listens on loopback only and holds
nothing real); `diy-wsgi sandbox --help` prints them. The webhook secret is the quick start's,
so examples/quickstart.ini delivers to the sandbox once its target.url points here.
"""
import re
from dataclasses import dataclass, field
from typing import Iterable, Optional, Tuple

from diy.hosts import is_loopback
from diy.sandbox.faults import FaultSettings, Outage, parse_duration, parse_outage, parse_rate, parse_retry_after
from diy.sandbox.wire import SandboxConfigError
from targets.webhook import decode_secret

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9000
DEFAULT_WEBHOOK_SECRET = "whsec_cXVpY2tzdGFydC13ZWJob29rLWtleQ=="
DEFAULT_TTD_TOKEN = "sandbox-ttd-token"
DEFAULT_TTD_SECRET = "sandbox-ttd-secret"
DEFAULT_CRITEO_CLIENT_ID = "sandbox-criteo-client"
DEFAULT_CRITEO_CLIENT_SECRET = "sandbox-criteo-secret"


@dataclass(frozen=True)
class SandboxSettings:
    """Everything the sandbox is started with; bad values raise SandboxConfigError."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    webhook_secret: str = field(default=DEFAULT_WEBHOOK_SECRET, repr=False)
    ttd_token: str = field(default=DEFAULT_TTD_TOKEN, repr=False)
    ttd_secret: str = field(default=DEFAULT_TTD_SECRET, repr=False)
    criteo_client_id: str = DEFAULT_CRITEO_CLIENT_ID
    criteo_client_secret: str = field(default=DEFAULT_CRITEO_CLIENT_SECRET, repr=False)
    webhook_max_members: Optional[int] = None
    """Answer an event of more members 413, as a receiver's body limit would (None: no limit)."""
    ttd_advertiser_id: str = "adv1"
    """The one advertiser the Trade Desk token or secret may send data for."""
    ttd_data_provider_id: Optional[str] = None
    ttd_data_provider_secret: Optional[str] = field(default=None, repr=False)
    """A data provider's id and its key for `TtdSignature-dp`; an upload naming another (or
    none while one is set) is refused 403 DataProviderMisconfigured."""
    ttd_max_bytes: int = 2_500_000
    ttd_segment_limit: Optional[int] = None
    """A new segment beyond this many is refused 403 TargetingDataLimitReached (None: no limit)."""
    ttd_failed_lines: str = "recorded"
    """The shape of a failed line: "recorded" (as production integrations saw it) or "schema"
    (with the SDK's optional `ItemNumber` and `TDID`)."""
    criteo_advertiser_id: str = "12345"
    """The one advertiser the Criteo app may create segments for (403 access-denied otherwise)."""
    criteo_name_clash: str = "warnings"
    """Where a taken name is named: "warnings" of a 200 (as Criteo's partial approvals list it)
    or "errors" of a 400 (the shape this project first assumed; no source)."""
    criteo_token_lifetime: int = 900
    criteo_rate_limit: int = 250
    criteo_rate_window: float = 60.0
    faults: FaultSettings = field(default_factory=FaultSettings)
    outages: Tuple[Outage, ...] = ()
    """Relative to the sandbox's start; `faults.outages` (absolute windows) starts empty."""
    seed: Optional[int] = None
    control_port: Optional[int] = None
    """Serve the views on this port and only the platforms on `port` (see control.py)."""
    journal: Optional[str] = None
    """Record every webhook call in this JSON-lines file (see journal.py)."""
    counting: bool = False
    """Count what arrives and check nothing, for load tests (see counting.py)."""
    trace: Optional[str] = None
    """Counting mode: note when matches of this pattern (one group) arrive."""

    def __post_init__(self):
        if not is_loopback(self.host):
            raise SandboxConfigError("--host must be a loopback address (127.0.0.1, ::1, localhost); "
                                     "the sandbox is for this machine only")
        for flag, port in (("--port", self.port), ("--control-port", self.control_port)):
            if port is not None and not (isinstance(port, int) and 0 <= port <= 65535):
                raise SandboxConfigError(f"{flag} must be from 0 to 65535")
        if self.control_port and self.control_port == self.port:
            raise SandboxConfigError("--control-port must differ from --port")
        try:
            decode_secret(self.webhook_secret)
        except ValueError as error:
            raise SandboxConfigError(f"--webhook-secret: {error}") from None
        for flag, value in (("--ttd-token", self.ttd_token), ("--ttd-secret", self.ttd_secret),
                            ("--ttd-advertiser-id", self.ttd_advertiser_id),
                            ("--criteo-client-id", self.criteo_client_id),
                            ("--criteo-client-secret", self.criteo_client_secret),
                            ("--criteo-advertiser-id", self.criteo_advertiser_id)):
            if not isinstance(value, str) or not value.strip():
                raise SandboxConfigError(f"{flag} must not be empty")
        if self.counting:
            if (self.faults != FaultSettings(latency=self.faults.latency) or self.outages
                    or self.control_port is not None or self.journal is not None):
                raise SandboxConfigError("--counting takes --latency as its one fault, and no "
                                         "--control-port or --journal")
            if self.trace is not None:
                try:
                    groups = re.compile(self.trace.encode("utf-8")).groups
                except re.error as error:
                    raise SandboxConfigError(f"--trace: {error}") from None
                if groups != 1:
                    raise SandboxConfigError("--trace must be a regular expression with one group")
        elif self.trace is not None:
            raise SandboxConfigError("--trace goes with --counting")
        if (self.ttd_data_provider_id is None) != (self.ttd_data_provider_secret is None):
            raise SandboxConfigError("a Trade Desk data provider needs its id and its secret")
        if self.criteo_name_clash not in ("warnings", "errors"):
            raise SandboxConfigError("criteo_name_clash must be warnings or errors")
        if self.ttd_failed_lines not in ("recorded", "schema"):
            raise SandboxConfigError("ttd_failed_lines must be recorded or schema")
        if not (isinstance(self.criteo_rate_limit, int) and self.criteo_rate_limit > 0
                and self.criteo_rate_window > 0):
            raise SandboxConfigError("the Criteo rate limit and its window must be above 0")


def settings_from_flags(
    *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
    webhook_secret: Optional[str] = None, ttd_token: Optional[str] = None,
    ttd_secret: Optional[str] = None, criteo_client_id: Optional[str] = None,
    criteo_client_secret: Optional[str] = None, ttd_advertiser_id: Optional[str] = None,
    criteo_advertiser_id: Optional[str] = None,
    error_rate: str = "0", rate_limit_rate: str = "0",
    retry_after: str = "1", latency: str = "0", latency_jitter: str = "0",
    outages: Iterable[str] = (), seed: Optional[int] = None, control_port: Optional[int] = None,
    journal: Optional[str] = None, counting: bool = False, trace: Optional[str] = None,
) -> SandboxSettings:
    """Settings from the command line's text values; None keeps a default credential."""
    credentials = {
        "webhook_secret": webhook_secret, "ttd_token": ttd_token, "ttd_secret": ttd_secret,
        "criteo_client_id": criteo_client_id, "criteo_client_secret": criteo_client_secret,
        "ttd_advertiser_id": ttd_advertiser_id, "criteo_advertiser_id": criteo_advertiser_id,
    }
    faults = FaultSettings(
        error_rate=parse_rate(error_rate, "--error-rate"),
        rate_limit_rate=parse_rate(rate_limit_rate, "--rate-limit-rate"),
        retry_after=parse_retry_after(retry_after),
        latency=parse_duration(latency, "--latency"),
        latency_jitter=parse_duration(latency_jitter, "--latency-jitter"),
    )
    return SandboxSettings(
        host=host, port=port, faults=faults, seed=seed, control_port=control_port, journal=journal,
        counting=counting, trace=trace,
        outages=tuple(parse_outage(outage) for outage in outages),
        **{name: value for name, value in credentials.items() if value is not None},
    )
