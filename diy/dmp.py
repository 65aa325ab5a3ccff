"""The DMP's request bodies: decoding and validating them, before anything is stored.

Validation is strict about what diy-wsgi needs (an audience and the platform's user id for each
mutation) and lenient about everything else: fields the DMP adds later are kept, never refused.
"""
import json
from dataclasses import dataclass
from typing import Any, Optional

from diy.http_errors import BadRequest
from outbox.store import ReceivedMutation

VALIDATE = "VALIDATE"
CREATE_AUDIENCE = "CREATE_AUDIENCE"
ADD_TO_AUDIENCE = "ADD_TO_AUDIENCE"
REMOVE_FROM_AUDIENCE = "REMOVE_FROM_AUDIENCE"
REQUEST_TYPES = (VALIDATE, CREATE_AUDIENCE, ADD_TO_AUDIENCE, REMOVE_FROM_AUDIENCE)
OPERATIONS = {ADD_TO_AUDIENCE: "add", REMOVE_FROM_AUDIENCE: "remove"}

KNOWN_MUTATION_FIELDS = ("Audience", "External_user_id", "Uuid", "Customer", "Platform")
MAX_ID_LENGTH = 512
INT64 = range(-(2**63), 2**63)


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
        raise BadRequest("the body's JSON is nested too deeply") from None
    except ValueError as error:
        raise BadRequest(f"the body is not valid JSON: {error}") from None
    if "\\ud" in text or "\\uD" in text:
        refuse_lone_surrogates(body)
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object, not {json_type(body)}")
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
        dmp_id=identifier(body, "Audience", "Audience"),
        name=text_field(body, "Name", "Name"),
        customer=scalar(body, "Customer", "Customer"),
    )


def parse_mutations(body):
    """The body's `Mutations` as ReceivedMutation, in the DMP's order; unknown fields kept."""
    mutations = body.get("Mutations")
    if not isinstance(mutations, list):
        raise BadRequest(f"Mutations must be a list of objects, not {json_type(mutations)}")
    parsed = []
    for index, mutation in enumerate(mutations):
        where = f"Mutations[{index}]"
        if not isinstance(mutation, dict):
            raise BadRequest(f"{where} must be an object, not {json_type(mutation)}")
        parsed.append(
            ReceivedMutation(
                audience=identifier(mutation, "Audience", f"{where}.Audience"),
                external_user_id=identifier(mutation, "External_user_id", f"{where}.External_user_id"),
                uuid=optional_text(mutation, "Uuid", f"{where}.Uuid"),
                customer=scalar(mutation, "Customer", f"{where}.Customer"),
                platform=scalar(mutation, "Platform", f"{where}.Platform"),
                extra={k: v for k, v in mutation.items() if k not in KNOWN_MUTATION_FIELDS},
            )
        )
    return parsed


def identifier(obj, key, where):
    """A non-empty id; integers are accepted and kept as their decimal text."""
    value = obj.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{where} must be a non-empty string, not {json_type(value)}")
    if len(value) > MAX_ID_LENGTH:
        raise BadRequest(f"{where} is longer than {MAX_ID_LENGTH} characters")
    return value


def text_field(obj, key, where):
    value = obj.get(key)
    if not isinstance(value, str):
        raise BadRequest(f"{where} must be a string, not {json_type(value)}")
    return value


def optional_text(obj, key, where):
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"{where} must be a string, not {json_type(value)}")
    return value


def scalar(obj, key, where):
    """A number or string kept as sent (the DMP sends integers), or None when absent."""
    value = obj.get(key)
    if isinstance(value, (dict, list)):
        raise BadRequest(f"{where} must be a number, not {json_type(value)}")
    if isinstance(value, int) and value not in INT64:
        raise BadRequest(f"{where} is too large a number")
    return value


def json_type(value):
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "missing or null"}
    return names.get(type(value), "a number")


def short(value, limit=40):
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
