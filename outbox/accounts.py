"""The platform accounts of an integration: which target instance serves which DMP client.

An integration has one account for every customer, or one per customer listed in the
configuration (`[integration:NAME:customer:ID]`); each account has its own target instance
and its own `Guard` (rate limit, calls in flight, circuit breaker).
"""
from dataclasses import dataclass
from typing import Mapping, Optional

from outbox.guard import Guard


@dataclass
class Account:
    label: str
    """For logs: `shop` or `shop/customer:123`."""
    target: object
    guard: Guard


class Accounts:
    def __init__(self, integration, shared: Optional[Account] = None, by_customer: Mapping[str, Account] = None):
        self.integration = integration
        self.shared = shared
        self.by_customer = dict(by_customer or {})
        every = [shared] if shared else list(self.by_customer.values())
        self.max_batch = min(account.target.max_batch for account in every)

    @classmethod
    def single(cls, integration, target, clock):
        """One account for every customer, unlimited but for the breaker (tests, simple setups)."""
        return cls(integration, Account(integration, target, Guard(clock)))

    def for_customer(self, customer) -> Optional[Account]:
        if self.shared is not None:
            return self.shared
        return self.by_customer.get(None if customer is None else str(customer))

    def all(self):
        return [self.shared] if self.shared else list(self.by_customer.values())

    def missing(self, customer):
        """Why `customer` has no account, in words an operator can act on."""
        return (
            f"no platform account is configured for DMP client {customer} in integration "
            f"{self.integration}; add [integration:{self.integration}:customer:{customer}]"
        )
