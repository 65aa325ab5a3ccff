"""The page at `GET /`: every platform's audiences with their member counts.

Every value on it came from a request (names, ids, advertisers), so each one is escaped.
"""
from html import escape
from typing import Any, Dict, List, Sequence

STYLE = ("body{font:15px/1.4 system-ui,sans-serif;margin:2em;max-width:60em}"
         "table{border-collapse:collapse;margin-bottom:1em}"
         "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}"
         "td.n{text-align:right}code{background:#f3f3f3;padding:0 .2em}")


def home_page(snapshot: Dict[str, Dict[str, Dict[str, Any]]], base_url: str) -> str:
    """The HTML page for GET /, from `SandboxState.snapshot()`."""
    webhook = [[dmp_id, a["id"], a["name"], len(a["members"])] for dmp_id, a in snapshot["webhook"].items()]
    ttd = [[name, ", ".join(s["advertiser_ids"]), len(s["members"])]
           for name, s in snapshot["thetradedesk"].items()]
    criteo = [[segment_id, s["name"], s["advertiser_id"], len(s["members"])]
              for segment_id, s in snapshot["criteo"].items()]
    base = escape(base_url)
    return "".join([
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="refresh" content="5">',
        f"<title>diy-wsgi sandbox</title><style>{STYLE}</style></head><body>",
        "<h1>diy-wsgi sandbox</h1>",
        "<p>A fake advertising platform on this machine; state lives in memory. "
        '<a href="/api/audiences">/api/audiences</a> · <a href="/api/stats">/api/stats</a> · '
        '<a href="/api/faults">/api/faults</a></p>',
        f"<h2>Webhook</h2><p><code>POST {base}/webhook</code></p>",
        _table(["DMP id", "sandbox id", "name", "members"], webhook),
        f"<h2>The Trade Desk</h2><p><code>POST {base}/data/advertiser</code></p>",
        _table(["segment", "advertisers", "members"], ttd),
        f"<h2>Criteo</h2><p><code>POST {base}/oauth2/token</code>, "
        f"<code>{base}/&lt;version&gt;/marketing-solutions/audience-segments/…</code></p>",
        _table(["segment id", "name", "advertiser", "members"], criteo),
        "</body></html>",
    ])


def _table(headings: Sequence[str], rows: List[List[Any]]) -> str:
    if not rows:
        return "<p>No audiences yet.</p>"
    head = "".join(f"<th>{escape(heading)}</th>" for heading in headings)
    body = "".join(
        "<tr>" + "".join(_cell(value) for value in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, int):
        return f'<td class="n">{value}</td>'
    return f"<td>{escape('' if value is None else str(value))}</td>"
