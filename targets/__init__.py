"""Platform modules: each turns audiences and mutations into one platform's API calls.

An integration names its target either by a builtin name (a key of `BUILTIN`) or by the import
path of its class, `package.module:Class` or `package.module.Class`.
"""
import importlib

BUILTIN = {
    "webhook": "targets.webhook:WebhookTarget",
    "thetradedesk": "targets.thetradedesk:TheTradeDeskTarget",
    "criteo": "targets.criteo:CriteoTarget",
}
TARGET_METHODS = ("create_audience", "add_users", "remove_users")


def load_target_class(spec: str) -> type:
    """The target class `spec` names; LookupError saying what was tried when there is none."""
    spec = spec.strip()
    path = BUILTIN.get(spec, spec)
    if ":" in path:
        module_name, _, class_name = path.partition(":")
    else:
        module_name, _, class_name = path.rpartition(".")
    known = f"builtin targets: {', '.join(sorted(BUILTIN))}"
    if not module_name or not class_name:
        raise LookupError(
            f"unknown target {spec!r}: give a builtin name or package.module:Class ({known})"
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise LookupError(
            f"target {spec!r}: cannot import module {module_name!r}"
            f" ({type(error).__name__}: {error}); {known}"
        ) from error
    target_class = getattr(module, class_name, None)
    if target_class is None:
        raise LookupError(f"target {spec!r}: module {module_name!r} has no {class_name!r}; {known}")
    missing = [name for name in TARGET_METHODS if not callable(getattr(target_class, name, None))]
    if not isinstance(target_class, type) or missing:
        raise LookupError(
            f"target {spec!r}: {module_name}.{class_name} is not a target class"
            f" (one with {', '.join(TARGET_METHODS)}); {known}"
        )
    return target_class
