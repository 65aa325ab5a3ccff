"""The DMP's request bodies: decoding and validating them, before anything is stored.

Validation is strict about what diy-wsgi needs (an audience and the platform's user id for each
mutation) and lenient about everything else: fields the DMP adds later are kept, never refused.
"""
import json
from dataclasses import dataclass
from typing import Any, Optional

from diy.http_errors import BadRequest

VALIDATE = "VALIDATE"
CREATE_AUDIENCE = "CREATE_AUDIENCE"
ADD_TO_AUDIENCE = "ADD_TO_AUDIENCE"
REMOVE_FROM_AUDIENCE = "REMOVE_FROM_AUDIENCE"
REQUEST_TYPES = (VALIDATE, CREATE_AUDIENCE, ADD_TO_AUDIENCE, REMOVE_FROM_AUDIENCE)
OPERATIONS = {ADD_TO_AUDIENCE: "add", REMOVE_FROM_AUDIENCE: "remove"}

NUL = "\x00"
HOLDS_NUL = ("holds a NUL character (\\u0000), which no id or name needs and the outbox does not store "
             "(PostgreSQL's text cannot hold it)")
KNOWN_MUTATION_FIELDS = frozenset(("Audience", "External_user_id", "Uuid", "Customer", "Platform"))
MAX_ID_LENGTH = 512
MAX_DEPTH = 32
"""Levels of nesting a body may have (the body is level 1, a mutation's fields are at level 4).
A deeper one is refused here, before anything is stored: storing it, sending it to the platform
or showing it would recurse as deep (nearly 1000 levels used to crash a request with a 500)."""
INT64 = range(-(2**63), 2**63)
INT64_LOW, INT64_END = INT64.start, INT64.stop
PLAIN = (float, type(None))


@dataclass(frozen=True)
class NewAudience:
    dmp_id: str
    name: str
    customer: Optional[Any]


def decode_body(raw, request_type):
    """The JSON object of a request body whose `Type`, if given, agrees with `?type=`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadRequest(f"the body is not valid UTF-8 (byte {error.start})") from None
    try:
        body = json.loads(text, parse_constant=refuse_constant, parse_float=finite_float)
    except RecursionError:
        raise BadRequest(f"the body is nested too deeply: a body may nest at most {MAX_DEPTH} levels") from None
    except ValueError as error:
        raise BadRequest(f"the body is not valid JSON: {error}") from None
    if "\\ud" in text or "\\uD" in text:
        refuse_lone_surrogates(body)
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object, not {json_type(body)}")
    for key, value in body.items():
        if key != "Mutations":
            refuse_deeper(value, MAX_DEPTH - 1, key)
    declared = body.get("Type")
    if declared is not None and declared != request_type:
        raise BadRequest(f"the body's Type {short(declared)} contradicts ?type={request_type}")
    return body


def refuse_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def finite_float(text):
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError(f"the number {text[:20]} is too large")
    return number


def refuse_lone_surrogates(body):
    """A `\\udXXX` escape without its pair decodes to a string no UTF-8 store can hold."""
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("the body holds a lone UTF-16 surrogate escape (\\udXXX), which is not text") from None


def parse_new_audience(body):
    return NewAudience(
        dmp_id=identifier(body, "Audience"),
        name=text_field(body, "Name"),
        customer=scalar(body, "Customer"),
    )


def parse_mutations(body):
    """The body's `Mutations` as {audience key: member rows} (`outbox.store.member_row`), each
    audience's in the DMP's order; unknown fields kept; the form `Outbox.enqueue_members` stores.

    This runs for every mutation of every request, so the checks are inline, an audience's key
    is checked once (a key found among the parsed ones passed already), and the error message
    (naming the mutation and the field) is only built when a check fails.
    """
    mutations = body.get("Mutations")
    if not isinstance(mutations, list):
        raise BadRequest(f"Mutations must be a list of objects, not {json_type(mutations)}")
    members = {}
    for index, mutation in enumerate(mutations):
        if type(mutation) is not dict:
            raise BadRequest(f"Mutations[{index}] must be an object, not {json_type(mutation)}")
        audience = mutation.get("Audience")
        user = mutation.get("External_user_id")
        uuid = mutation.get("Uuid")
        customer = mutation.get("Customer")
        platform = mutation.get("Platform")
        rows = members.get(audience) if type(audience) is str else None
        if rows is None:
            audience = identifier(mutation, "Audience", index)
            rows = members.setdefault(audience, [])
        if not (type(user) is str and 0 < len(user) <= MAX_ID_LENGTH and user.strip() and NUL not in user):
            user = identifier(mutation, "External_user_id", index)
        if uuid is not None and (type(uuid) is not str or NUL in uuid):
            if type(uuid) is str:
                raise BadRequest(f"{where(index, 'Uuid')} {HOLDS_NUL}")
            raise BadRequest(f"{where(index, 'Uuid')} must be a string, not {json_type(uuid)}")
        if not (plain(customer) and plain(platform)):
            customer = scalar(mutation, "Customer", index)
            platform = scalar(mutation, "Platform", index)
        extra = None
        if not mutation.keys() <= KNOWN_MUTATION_FIELDS:
            extra = {k: v for k, v in mutation.items() if k not in KNOWN_MUTATION_FIELDS}
            for key, value in extra.items():
                refuse_deeper(value, MAX_DEPTH - 3, where(index, key))
        rows.append([user, uuid, customer, platform, extra])
    return members


def refuse_deeper(value, allowed, name):
    """BadRequest when `value` nests more than `allowed` levels of lists and objects.

    It walks with a list, not by recursion, so the check itself cannot run out of stack.
    """
    pending = [(value, 1)] if isinstance(value, (dict, list)) else []
    while pending:
        node, depth = pending.pop()
        if depth > allowed:
            raise BadRequest(f"{name} is nested too deeply: a body may nest at most {MAX_DEPTH} levels")
        children = node.values() if isinstance(node, dict) else node
        pending.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def plain(value):
    """A Customer or Platform value that needs no closer look: the common case, decided fast."""
    kind = type(value)
    if kind is int:
        return INT64_LOW <= value < INT64_END
    if kind is str:
        return NUL not in value
    return kind in PLAIN


def where(index, key):
    return key if index is None else f"Mutations[{index}].{key}"


def identifier(obj, key, index=None):
    """A non-empty id; integers are accepted and kept as their decimal text."""
    value = obj.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{where(index, key)} must be a non-empty string, not {json_type(value)}")
    if len(value) > MAX_ID_LENGTH:
        raise BadRequest(f"{where(index, key)} is longer than {MAX_ID_LENGTH} characters")
    if NUL in value:
        raise BadRequest(f"{where(index, key)} {HOLDS_NUL}")
    return value


def text_field(obj, key):
    value = obj.get(key)
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string, not {json_type(value)}")
    if NUL in value:
        raise BadRequest(f"{key} {HOLDS_NUL}")
    return value


def scalar(obj, key, index=None):
    """A number or string kept as sent (the DMP sends integers), or None when absent."""
    value = obj.get(key)
    if isinstance(value, (dict, list)):
        raise BadRequest(f"{where(index, key)} must be a number, not {json_type(value)}")
    if isinstance(value, int) and value not in INT64:
        raise BadRequest(f"{where(index, key)} is too large a number")
    if isinstance(value, str) and NUL in value:
        raise BadRequest(f"{where(index, key)} {HOLDS_NUL}")
    return value


def json_type(value):
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "missing or null"}
    return names.get(type(value), "a number")


def short(value, limit=40):
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
