"""Log lines an operator can grep: `event key=value ...` text, or the same as one JSON object.

Every line diy-wsgi writes is an event name followed by key=value fields (strings with spaces
are quoted). The JSON format parses those fields into keys, so log shippers need no pattern.
Nothing logs a request body, a secret, or (above debug level) a user id.
"""
import ast
import json
import logging
import re
import sys
import time

FIELD = re.compile(r"""(\w+)=('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\S+)""")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record):
        message = record.getMessage()
        event, _, rest = message.partition(" ")
        document = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": event,
        }
        for key, value in FIELD.findall(rest):
            document.setdefault(key, unquote(value))
        if "=" not in rest and rest:
            document["message"] = message
        if record.exc_info:
            document["traceback"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False, default=str)


def unquote(value):
    if value[:1] in "'\"":
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def configure(level="info", style="text", stream=None):
    """Send diy-wsgi's logs (logger `diy`) to `stream` (stderr) at `level`, as text or JSON."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if style == "json" else logging.Formatter(TEXT_FORMAT))
    logger = logging.getLogger("diy")
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(getattr(logging, level.upper()))
    logger.propagate = False
