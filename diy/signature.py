"""The DMP's `X-HMAC`: lowercase hex HMAC-SHA1 of the raw request body, keyed by a shared secret."""
import hashlib
import hmac


def sign(secret, body):
    """The `X-HMAC` value for `body` (bytes) under `secret` (bytes)."""
    return hmac.new(secret, body, hashlib.sha1).hexdigest()


def verify(secrets, body, header):
    """True when `header` is the signature of `body` under any of `secrets`.

    Every secret is tried whatever the outcome, and a malformed header (wrong length, not hex,
    not ASCII) is simply a wrong one, so neither timing nor the answer tells an attacker more.
    """
    if not header:
        return False
    offered = header.strip().lower().encode("utf-8", "replace")
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(sign(secret, body).encode("ascii"), offered)
    return matched
