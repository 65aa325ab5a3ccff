"""What Criteo's Marketing Solutions API takes and answers, as pure functions: request bodies,
segment names, and reading answers (problems under `errors` and `warnings`, ids, deprecation
headers). No I/O: targets/criteo.py calls the platform.
"""
from __future__ import annotations

import email.utils
import logging
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence

from targets.base import Audience, Mutation
from targets.http import status_summary

log = logging.getLogger("diy.targets.criteo")

NAME_TAKEN = "name-must-be-unique"
SEGMENT_GONE = frozenset({"segment-not-found", "audience-invalid"})
"""Codes meaning the segment no longer exists: the first from Criteo's partial-approval
warnings, the second from RudderStack's tests of the older contact-list path."""
TEXT_CHARS = 200
ERROR_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def segment_name(prefix: str, audience: Audience) -> str:
    """`<prefix> <name> (<dmp_id>)`: the same for every call about one DMP audience."""
    words = [prefix] if prefix else []
    if audience.name and audience.name.strip():
        words.append(audience.name)
    words.append(f"({audience.dmp_id})")
    return " ".join(" ".join(words).split())


def segment_description(audience: Audience) -> str:
    customer = f", customer {audience.customer}" if audience.customer is not None else ""
    return (
        f"Mapp DMP audience {audience.dmp_id}{customer}, integration {audience.integration};"
        " kept by diy-wsgi"
    )


def create_body(advertiser_id: str, name: str, description: str) -> Dict[str, Any]:
    return {
        "data": [
            {
                "type": "AudienceSegment",
                "attributes": {
                    "advertiserId": advertiser_id,
                    "name": name,
                    "description": description,
                    "contactList": {},
                },
            }
        ]
    }


def search_body(advertiser_id: str) -> Dict[str, Any]:
    return {
        "data": {
            "attributes": {
                "audienceSegmentTypes": ["ContactList"],
                "advertiserIds": [advertiser_id],
            }
        }
    }


def amendment_body(
    op: str, identifier_type: str, gum_caller_id: Optional[int], identifiers: List[str]
) -> Dict[str, Any]:
    attributes: Dict[str, Any] = {"operation": op, "identifierType": identifier_type}
    if identifier_type == "gum":
        attributes["gumCallerId"] = gum_caller_id
    attributes["identifiers"] = identifiers
    return {"data": {"type": "ContactlistAmendment", "attributes": attributes}}


def invalid_mutations(
    document: Any, mutations: Sequence[Mutation], identifier_type: str
) -> Dict[int, str]:
    """{mutation id: reason} for the mutations whose identifier Criteo's sample names."""
    attributes = path_in(document, "data", "attributes")
    if not isinstance(attributes, dict):
        return {}
    sample = attributes.get("sampleInvalidIdentifiers")
    if not isinstance(sample, list):
        sample = []
    named = {value for value in sample if isinstance(value, str)}
    named &= {mutation.external_user_id for mutation in mutations}
    invalid = attributes.get("nbInvalidIdentifiers")
    if isinstance(invalid, int) and invalid > len(named):
        log.warning(
            "criteo counted invalid identifiers it did not name: invalid=%d named=%d;"
            " the unnamed ones count as delivered",
            invalid, len(named),
        )
    reason = f"Criteo: not a valid {identifier_type} identifier"
    return {mutation.id: reason for mutation in mutations if mutation.external_user_id in named}


def deprecation_notice(headers: Mapping[str, str]) -> Optional[str]:
    """None unless the answer carries `Deprecation`; then its `Sunset` as YYYY-MM-DD, or "".

    `headers` have lower-case names. Criteo sends `Deprecation: true` (RFC 9745 would send
    `@<epoch>`; either counts) and an HTTP-date `Sunset` (RFC 8594).
    """
    deprecation = headers.get("deprecation")
    if deprecation is None or deprecation.strip().lower() in ("", "false"):
        return None
    sunset = headers.get("sunset")
    try:
        moment = email.utils.parsedate_to_datetime(sunset) if sunset else None
    except (TypeError, ValueError, IndexError, OverflowError):
        moment = None
    return moment.strftime("%Y-%m-%d") if moment is not None else ""


def error_code(document: Any) -> Optional[str]:
    errors = problems_under(document, "errors")
    code = errors[0].get("code") if errors else None
    return code if isinstance(code, str) else None


def problem_codes(document: Any) -> List[str]:
    """The codes of every entry under `errors` and `warnings` (Criteo puts an item it refused
    in a partial approval under either)."""
    entries = problems_under(document, "errors") + problems_under(document, "warnings")
    return [entry["code"] for entry in entries if isinstance(entry.get("code"), str)]


def criteo_summary(response, key: str = "errors") -> str:
    """`HTTP 400 name-must-be-unique: <title>: <detail>` from Criteo's first error (or
    warning, with `key`), if any."""
    errors = problems_under(response.json(), key)
    if not errors:
        return status_summary(response)
    first = errors[0]
    code, title, detail = (printable_text(first.get(key)) for key in ("code", "title", "detail"))
    head = f"HTTP {response.status}" + (f" {code}" if code else "")
    reasons = [part for part in (title, detail) if part and part != code]
    more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
    return ": ".join([head, *reasons]) + more


def token_error_summary(response) -> str:
    """`HTTP 401: invalid_client`: the status and the OAuth error code, nothing else."""
    document = response.json()
    code = None
    if isinstance(document, dict):
        code = document.get("error")
        if code is None:
            code = error_code(document)
    if isinstance(code, str) and ERROR_CODE.fullmatch(code):
        return f"HTTP {response.status}: {code}"
    return f"HTTP {response.status}"


def problems_under(document: Any, key: str) -> List[Dict[str, Any]]:
    entries = document.get(key) if isinstance(document, dict) else None
    if not isinstance(entries, list):
        return []
    return [entry for entry in entries if isinstance(entry, dict)]


def printable_text(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    printable = " ".join("".join(c if c.isprintable() else " " for c in value).split())
    return printable if len(printable) <= TEXT_CHARS else printable[: TEXT_CHARS - 1] + "…"


def path_in(document: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


def resources_of(document: Any) -> List[Dict[str, Any]]:
    data = document.get("data") if isinstance(document, dict) else None
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []


def segment_id_of(resource: Mapping[str, Any]) -> Optional[str]:
    value = resource.get("id")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value:
        return value
    return None


def created_segment_id(document: Any) -> Optional[str]:
    found = resources_of(document)
    return segment_id_of(found[0]) if found else None


def total_items_of(document: Any) -> Optional[int]:
    total = path_in(document, "meta", "totalItems")
    return total if isinstance(total, int) and not isinstance(total, bool) else None
