"""The request every contender receives: a signed ADD_TO_AUDIENCE with 100 mutations.

Request `i` of phase `p` goes to audience `i % AUDIENCES` and adds the users `p` + 8 digits of
`i` + 3 digits of the mutation's place, so every request of a run adds users no other request
adds (nothing coalesces, and the receiver can tell which request a delivery came from). Bodies
are built from one template per audience by a single `bytes.replace`, cheap enough to do at
send time, and signed like the DMP signs them (hex HMAC-SHA1 of the raw body, `X-HMAC`).
"""
import hashlib
import hmac
import json
import re

MUTATIONS = 100
AUDIENCES = 16
DMP_SECRET = b"bench-dmp-secret"
PATH = "/dmp?type=ADD_TO_AUDIENCE"
PLACEHOLDER = b"@@@@@@@@@"
"""Nine bytes: the phase letter and eight digits of the request number."""
TRACE_ID = re.compile(rb'"external_user_id":"([a-z][0-9]{8})000"')
"""How the receiver finds the first member of each request in a webhook event."""


def audience_id(number):
    return f"a5940e473cea659.35669387149742{number:04d}"


def _template(audience):
    mutations = [
        {
            "Uuid": f"{PLACEHOLDER.decode()}-{k:04d}-4672-52f0-18887ea12345",
            "Audience": audience_id(audience),
            "Customer": 123,
            "Platform": 113,
            "External_user_id": f"{PLACEHOLDER.decode()}{k:03d}",
        }
        for k in range(MUTATIONS)
    ]
    return json.dumps({"Type": "ADD_TO_AUDIENCE", "Mutations": mutations}, separators=(",", ":")).encode()


TEMPLATES = [_template(a) for a in range(AUDIENCES)]


def tag(phase, index):
    return b"%c%08d" % (ord(phase), index % 100_000_000)


def body(phase, index):
    return TEMPLATES[index % AUDIENCES].replace(PLACEHOLDER, tag(phase, index))


def signature(raw, secret=DMP_SECRET):
    return hmac.new(secret, raw, hashlib.sha1).hexdigest()


def http_request(phase, index, host="127.0.0.1", path=PATH):
    """The whole HTTP/1.1 request, bytes ready for the socket."""
    raw = body(phase, index)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"X-HMAC: {signature(raw)}\r\nContent-Length: {len(raw)}\r\n\r\n"
    )
    return head.encode() + raw


def write_pool(path, phase, count):
    """`count` signed bodies, one `hmac<TAB>body` a line, for wrk's Lua script to cycle through."""
    with open(path, "wb") as out:
        for index in range(count):
            raw = body(phase, index)
            out.write(signature(raw).encode() + b"\t" + raw + b"\n")


WRK_SCRIPT = """\
-- Cycles through pre-signed ADD_TO_AUDIENCE requests written by bench/payloads.py.
local pool = os.getenv("BENCH_POOL")
local requests = {}
local count = 0
local next_index = 0

function init(args)
  for line in io.lines(pool) do
    local tab = line:find("\\t", 1, true)
    count = count + 1
    requests[count] = wrk.format("POST", nil,
      {["Content-Type"] = "application/json", ["X-HMAC"] = line:sub(1, tab - 1)}, line:sub(tab + 1))
  end
end

function request()
  next_index = next_index % count + 1
  return requests[next_index]
end
"""
