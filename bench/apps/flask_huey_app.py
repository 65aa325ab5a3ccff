"""What a Python team would write instead: Flask, and huey's SqliteHuey as the queue.

The view checks the request as diy-wsgi does (dmp_checks), enqueues one huey task holding the
request's mutations and answers 200; `huey_consumer flask_huey_app.huey` (options tuned for
latency: contenders.HUEY_CONSUMER) runs the task, which POSTs the members to the platform (the
bench's receiver) over a keep-alive connection per thread. SqliteHuey with its defaults: WAL, and SQLite's own default synchronous
(FULL in Debian's build), so an enqueued task survives a power cut; but the consumer deletes the
row when it dequeues, so a consumer killed mid-task loses that task.
"""
import os

from flask import Flask, jsonify, request
from huey import SqliteHuey

from dmp_checks import Refused, checked_mutations
from platform_client import members_payload, platform_post

huey = SqliteHuey("dmp", filename=os.environ.get("BENCH_HUEY_DB", "huey.sqlite3"))
app = Flask(__name__)


@huey.task(retries=50, retry_delay=2)
def deliver(request_type, mutations):
    platform_post(members_payload(request_type, mutations))


@app.post("/dmp")
def dmp():
    request_type = (request.args.get("type") or "").upper()
    try:
        mutations = checked_mutations(request.get_data(), request.headers.get("X-HMAC"), request_type)
    except Refused as refused:
        return jsonify(error=str(refused)), refused.status
    deliver(request_type, mutations)
    return jsonify(accepted=len(mutations))
