"""A webhook receiver to watch diy-wsgi deliver: verifies signatures, prints events, keeps members.

    python examples/receiver.py [--port 8001] [--secret whsec_...]

POST /events takes diy-wsgi's events; GET / shows every audience and its members as JSON.
Events repeated after a retry (same webhook-id) are recognised and applied once.
"""
import argparse
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from targets.webhook import SignatureError, verify  # noqa: E402

QUICKSTART_SECRET = "whsec_cXVpY2tzdGFydC13ZWJob29rLWtleQ=="


class Receiver(BaseHTTPRequestHandler):
    secret = QUICKSTART_SECRET
    audiences = {}
    seen = set()

    def do_GET(self):
        self.answer(200, {key: sorted(members) for key, members in self.audiences.items()})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            verify(self.secret, dict(self.headers.items()), body, now=time.time())
        except SignatureError as error:
            return self.answer(401, {"error": str(error)})
        event = json.loads(body)
        audience = event["data"]["audience"]
        members = self.audiences.setdefault(audience["dmp_id"], set())
        message_id = self.headers["webhook-id"]
        if message_id not in self.seen:
            self.seen.add(message_id)
            users = {member["external_user_id"] for member in event["data"].get("members", [])}
            members.update(users) if event["type"] == "audience.members_added" else members.difference_update(users)
        print(f"{event['type']} audience={audience['dmp_id']} members={len(event['data'].get('members', []))} "
              f"now={len(members)} id={message_id}", flush=True)
        self.answer(200, {"id": f"rcv-{audience['dmp_id']}"} if event["type"] == "audience.created" else {})

    def answer(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--secret", default=QUICKSTART_SECRET, help="the integration's target.secret")
    args = parser.parse_args()
    Receiver.secret = args.secret
    server = ThreadingHTTPServer((args.host, args.port), Receiver)
    print(f"receiving on http://{args.host}:{args.port}/events", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
