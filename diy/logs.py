"""Log lines an operator can grep: `event key=value ...` text, or the same as one JSON object.

Every line diy-wsgi writes comes from a template such as `"request method=%s path=%s"`: an
event name, then key=value fields. The values often come from outside (a path, an audience id,
a platform's reason), so the formatters take the fields from the template and its arguments,
never from the finished text, and no value can add a field or a line of its own:

- text: a value that is empty or holds a space, a quote, a backslash or anything unprintable
  (control characters such as newline, ESC or NUL, line separators, bidirectional marks) is
  written in double quotes with those characters escaped (`path="/x\\n2026-... forged"`);
  tracebacks are indented, so none of their lines can pass for a record;
- json: each field is the value itself (json.dumps escapes it, ASCII only), and the event is
  the template's leading words.

Nothing logs a request body, a secret, or (above debug level) a user id.
"""
import functools
import json
import logging
import re
import sys
import time
from typing import NamedTuple, Optional, Tuple

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
CONVERSION = re.compile(r"%[-#0 +]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa%]")
KEYED_WORD = re.compile(r"(\w+)=(.*?)([;,:]?)", re.DOTALL)
BARE_VALUE = re.compile(r'[^ "\\]+')
ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
TRACEBACK_INDENT = "    "


class Word(NamedTuple):
    """One whitespace-separated word of a template: its literal text and `%` conversions."""

    key: Optional[str]
    pieces: Tuple[Tuple[bool, str], ...]
    """(is a conversion, text) in order; a field's pieces make its value."""
    trailing: str = ""
    """Punctuation after a field's value (`reason=%r;`), not part of the value."""

    @property
    def conversions(self):
        return sum(1 for converts, text in self.pieces if converts and text != "%%")


class Rendered(NamedTuple):
    event: str
    fields: dict
    text: str
    """The whole line's message, every value quoted and escaped as the text format writes it."""
    has_free_text: bool
    """Words beyond the event and the fields, which only `text` carries."""


@functools.lru_cache(maxsize=1024)
def parse_template(template, interpolated):
    """The words of a message template (separators are words without a key)."""
    words = []
    for part in re.split(r"(\s+)", template):
        if not part:
            continue
        match = None if part.isspace() else KEYED_WORD.fullmatch(part)
        key, value, trailing = match.groups() if match else (None, part, "")
        words.append(Word(key, split_conversions(value) if interpolated else ((False, value),), trailing))
    return tuple(words)


def split_conversions(text):
    pieces, start = [], 0
    for match in CONVERSION.finditer(text):
        if match.start() > start:
            pieces.append((False, text[start:match.start()]))
        pieces.append((True, match.group()))
        start = match.end()
    if start < len(text):
        pieces.append((False, text[start:]))
    return tuple(pieces)


def render(record):
    """The record's event, fields and text line, built from its template and arguments."""
    template, args = record.msg, record.args
    if isinstance(template, str) and isinstance(args, tuple):
        words = parse_template(template, bool(args))
        if sum(word.conversions for word in words) == len(args):
            try:
                return render_words(words, iter(args))
            except (TypeError, ValueError):
                pass
    text = escape_unprintable(record.getMessage())
    return Rendered(text.partition(" ")[0], {}, text, True)


def render_words(words, args):
    event, fields, text, free_text = [], {}, [], False
    for word in words:
        if word.key is not None:
            value = "".join(convert(spec, args) if converts else spec for converts, spec in word.pieces)
            fields.setdefault(word.key, value)
            text.append(f"{word.key}={quote(value)}{word.trailing}")
            continue
        shown = "".join(show_free_piece(converts, spec, args) for converts, spec in word.pieces)
        text.append(shown)
        if word.pieces[0][1].isspace():
            continue
        if fields or word.conversions or (event and event[-1].endswith((";", ":", ","))):
            free_text = True
        else:
            event.append(shown)
    return Rendered(" ".join(event).rstrip(";:,"), fields, "".join(text), free_text)


def show_free_piece(converts, spec, args):
    """A piece of a word outside the fields: trusted template text, or a value quoted like a field's."""
    if not converts:
        return escape_unprintable(spec)
    value = convert(spec, args)
    return value if spec == "%%" else quote(value)


def convert(spec, args):
    """One argument as its `%` conversion writes it; a string is taken as it is for %s and %r."""
    if spec == "%%":
        return "%"
    value = next(args)
    if isinstance(value, str) and spec in ("%s", "%r"):
        return value
    return spec % (value,)


def quote(value):
    """`value` as one token: bare when it is plain, else in double quotes with escapes."""
    if value.isprintable() and BARE_VALUE.fullmatch(value):
        return value
    return '"' + "".join(ESCAPES.get(char) or (char if char.isprintable() else hex_escape(char))
                         for char in value) + '"'


def escape_unprintable(text):
    """`text` with every unprintable character escaped; spaces and quotes are kept."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else ESCAPES.get(char) or hex_escape(char) for char in text)


def hex_escape(char):
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def indent_lines(text):
    """A traceback's lines, indented and escaped: none can pass for a record of its own."""
    return "\n".join(TRACEBACK_INDENT + escape_unprintable(line) for line in text.split("\n"))


class TextFormatter(logging.Formatter):
    def __init__(self):
        super().__init__(TEXT_FORMAT)

    def format(self, record):
        safe = logging.makeLogRecord(record.__dict__)
        safe.msg, safe.args = render(record).text, None
        return super().format(safe)

    def formatException(self, exc_info):
        return indent_lines(super().formatException(exc_info))

    def formatStack(self, stack_info):
        return indent_lines(super().formatStack(stack_info))


class JsonFormatter(logging.Formatter):
    def format(self, record):
        rendered = render(record)
        document = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": rendered.event,
        }
        for key, value in rendered.fields.items():
            document.setdefault(key, value)
        if rendered.has_free_text:
            document["message"] = rendered.text
        if record.exc_info:
            document["traceback"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


def configure(level="info", style="text", stream=None):
    """Send diy-wsgi's logs (logger `diy`) to `stream` (stderr) at `level`, as text or JSON."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if style == "json" else TextFormatter())
    logger = logging.getLogger("diy")
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(getattr(logging, level.upper()))
    logger.propagate = False
