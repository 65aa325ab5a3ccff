"""The vendor's example design: check the request, then forward it to the platform inside the
request and answer with the platform's verdict. Nothing is stored; a slow platform is a slow
answer. Flask, and one keep-alive connection to the platform per thread (its best case)."""
from flask import Flask, jsonify, request

from dmp_checks import Refused, checked_mutations
from platform_client import members_payload, platform_post

app = Flask(__name__)


@app.post("/dmp")
def dmp():
    request_type = (request.args.get("type") or "").upper()
    try:
        mutations = checked_mutations(request.get_data(), request.headers.get("X-HMAC"), request_type)
    except Refused as refused:
        return jsonify(error=str(refused)), refused.status
    try:
        platform_post(members_payload(request_type, mutations))
    except Exception as error:
        return jsonify(error=f"the platform failed: {type(error).__name__}"), 502
    return jsonify(accepted=len(mutations))
