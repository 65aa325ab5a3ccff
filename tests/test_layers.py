"""The layers of the code, and that every import points down them (imports inside functions too).

    CLI          diy-wsgi's commands and the sandbox they start
    WSGI app     the callable, its probes, and the servers that run it
    service      what the app and the commands share: configuration, metrics, DMP parsing, logs
    dispatcher   the threads that drain the outbox
    outbox       storage: SQLite and PostgreSQL, the admin statements
    targets      the platforms

A module may import from its own layer or any layer below, never above, and no two modules
import each other, directly or round a circle.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = (
    ("CLI", ("diy.__main__", "diy.cli", "diy.admin", "diy.admin_arguments", "diy.admin_output", "diy.sandbox")),
    ("WSGI app", ("diy_wsgi", "diy.wsgi_request", "diy.health", "diy.servers")),
    ("service", ("diy.service", "diy.metrics", "diy.config", "diy.config_values", "diy.config_secrets", "diy.dmp",
                 "diy.logs", "diy.signature", "diy.http_errors", "diy.hosts")),
    ("dispatcher", ("outbox.dispatcher",)),
    ("outbox", ("outbox",)),
    ("targets", ("targets",)),
)


def modules():
    """{module name: path} of the runtime code."""
    paths = [*ROOT.glob("diy/**/*.py"), *ROOT.glob("outbox/*.py"), *ROOT.glob("targets/*.py"), ROOT / "diy_wsgi.py"]
    found = {}
    for path in paths:
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(path, known):
    """The project's modules that `path` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if name in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in known}


def layer_of(module):
    """The index of the layer a module belongs to (0 is the top): its most specific match."""
    matches = [(len(prefix), index) for index, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} belongs to no layer: add it to LAYERS in {Path(__file__).name}"
    return max(matches)[1]


def graph():
    known = modules()
    return {name: imports_of(path, known) - {name} for name, path in known.items()}


def test_every_import_points_down_the_layers():
    upward = [
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {imported} ({LAYERS[layer_of(imported)][0]})"
        for module, imported_modules in sorted(graph().items())
        for imported in sorted(imported_modules)
        if layer_of(imported) < layer_of(module)
    ]
    assert upward == []


def test_no_modules_import_each_other_round_a_circle():
    edges = graph()
    done, path, circles = set(), [], []

    def visit(module):
        if module in path:
            circles.append(" -> ".join(path[path.index(module):] + [module]))
            return
        if module in done:
            return
        path.append(module)
        for imported in sorted(edges.get(module, ())):
            visit(imported)
        path.pop()
        done.add(module)

    for module in sorted(edges):
        visit(module)
    assert circles == []
