"""One keep-alive HTTP/1.1 connection per thread to the platform (BENCH_PLATFORM_URL)."""
import http.client
import json
import os
import threading
from urllib.parse import urlsplit

PLATFORM = urlsplit(os.environ.get("BENCH_PLATFORM_URL", "http://127.0.0.1:8201/events"))
_local = threading.local()


def members_payload(request_type, mutations):
    members = [{"external_user_id": m["External_user_id"], "audience": m["Audience"], "uuid": m.get("Uuid")}
               for m in mutations]
    return json.dumps({"type": request_type, "members": members}, separators=(",", ":")).encode()


def platform_post(payload):
    connection = getattr(_local, "connection", None)
    if connection is None:
        connection = _local.connection = http.client.HTTPConnection(PLATFORM.hostname, PLATFORM.port, timeout=10)
    try:
        connection.request("POST", PLATFORM.path, body=payload, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
    except (OSError, http.client.HTTPException):
        connection.close()
        _local.connection = None
        raise
    if response.status >= 300:
        raise RuntimeError(f"the platform answered {response.status}")
