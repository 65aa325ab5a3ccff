"""What every DMP-facing contender does before its real work, as diy-wsgi does it: check the
X-HMAC (hex HMAC-SHA1 of the raw body) before parsing, then decode the JSON and check that
each mutation names an audience and a user. Kept apart so the Flask contenders share it."""
import hashlib
import hmac
import json
import os

SECRET = os.environ.get("BENCH_DMP_SECRET", "bench-dmp-secret").encode()


class Refused(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def checked_mutations(raw, signature, request_type):
    expected = hmac.new(SECRET, raw, hashlib.sha1).hexdigest()
    if not signature or not hmac.compare_digest(expected, signature.strip().lower()):
        raise Refused(401, "the X-HMAC header is missing or does not match the body")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Refused(400, "the body is not UTF-8 JSON") from None
    if not isinstance(body, dict) or body.get("Type", request_type) != request_type:
        raise Refused(400, "the body is not an object of this ?type=")
    mutations = body.get("Mutations")
    if not isinstance(mutations, list):
        raise Refused(400, "Mutations must be a list")
    for index, mutation in enumerate(mutations):
        if not isinstance(mutation, dict):
            raise Refused(400, f"Mutations[{index}] must be an object")
        for key in ("Audience", "External_user_id"):
            value = mutation.get(key)
            if not isinstance(value, (str, int)) or isinstance(value, bool) or not str(value).strip():
                raise Refused(400, f"Mutations[{index}].{key} must be a non-empty string")
    return mutations
