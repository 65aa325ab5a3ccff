"""The INI file becomes a `Config`, or one `ConfigError` that says where the problem is."""
import os
import subprocess
import sys
import tempfile
import textwrap
import traceback

import pytest

from diy.config import (Config, ConfigError, DispatcherSettings, Integration, load_config,
                        parse_config)
from diy.cli import main as cli_main
from diy.signature import sign
from targets import load_target_class
from targets.webhook import WebhookTarget
from tests.processes import ROOT

EXAMPLE = """\
[diy]
database = diy.sqlite3          ; required; a relative path is relative to the config file's folder
synchronous = full              ; full (default: an acknowledged mutation survives power loss) | normal
write_timeout = 3s              ; how long a request waits for the database write lock before 503
max_body = 1048576              ; bytes; larger requests get 413 (accepts 512k, 1M suffixes too)
create_timeout = 2.5s           ; budget for creating an audience during CREATE_AUDIENCE
retention = 1d                  ; how long delivered mutations are kept before purge (0 = delete at once)
log_level = info                ; debug|info|warning|error

[dispatcher]
embedded = yes                  ; run the dispatcher inside the serving process
threads = 4                     ; platform calls in flight at once, per process (1..256)
poll_interval = 1s              ; how often to look for work committed by other processes
lease = 5m                      ; how long a claimed batch is reserved
max_attempts = 50               ; transient failures before a batch is dead-lettered
backoff_base = 2s
backoff_cap = 10m
stop_timeout = 10s              ; graceful stop: in-flight calls get this long to finish

[integration:demo]              ; one or more; NAME matches [A-Za-z0-9_.-]+
path = /dmp                     ; URL path the DMP calls
hmac_secrets = env:DIY_SECRET   ; comma-separated; several are accepted at once
; optional second layer (a comment after a secret written inline would be ambiguous)
basic_auth = user:password
target = webhook                ; a builtin name or package.module:Class for your own
return_target_id = no           ; yes: answer CREATE_AUDIENCE with {"id": <platform id>}
target.url = http://127.0.0.1:8001/events     ; every target.* key goes to the target
target.secret = file:webhook.secret
"""

MINIMAL = """\
[diy]
database = /var/lib/diy/diy.sqlite3

[integration:demo]
path = /dmp
hmac_secrets = s3cr3t
target = webhook
"""


def parse(text, **kwargs):
    kwargs.setdefault("source", "diy.ini")
    return parse_config(textwrap.dedent(text), **kwargs)


def parse_error(text, **kwargs):
    with pytest.raises(ConfigError) as caught:
        parse(text, **kwargs)
    return str(caught.value)


def with_setting(section, line, base=MINIMAL):
    """`base` with `line` added to `[section]` (the section is added when missing)."""
    header = f"[{section}]\n"
    if header not in base:
        return f"{base}\n{header}{line}\n"
    return base.replace(header, f"{header}{line}\n")


def test_the_example_parses_into_typed_settings(tmp_path):
    (tmp_path / "webhook.secret").write_text("w3bh00k\n")
    config_file = tmp_path / "diy.ini"
    config_file.write_text(EXAMPLE)

    config = load_config(config_file, environ={"DIY_SECRET": "s3cr3t"})

    assert config == Config(
        database=str(tmp_path / "diy.sqlite3"),
        metrics_dir=str(tmp_path / "diy.sqlite3.metrics"),
        synchronous="full",
        write_timeout=3.0,
        max_body=1048576,
        create_timeout=2.5,
        retention=86400.0,
        log_level="info",
        dispatcher=DispatcherSettings(
            embedded=True, threads=4, poll_interval=1.0, lease=300.0, max_attempts=50,
            backoff_base=2.0, backoff_cap=600.0, stop_timeout=10.0),
        integrations=(Integration(
            name="demo",
            path="/dmp",
            hmac_secrets=(b"s3cr3t",),
            basic_auth=("user", "password"),
            target="webhook",
            target_settings={"url": "http://127.0.0.1:8001/events", "secret": "w3bh00k"},
            return_target_id=False),),
        source=str(config_file),
    )


def test_omitted_settings_take_the_documented_defaults():
    config = parse(MINIMAL)

    assert (config.synchronous, config.write_timeout, config.max_body, config.create_timeout,
            config.retention, config.log_level) == ("full", 3.0, 1048576, 2.5, 86400.0, "info")
    assert config.dispatcher == DispatcherSettings(
        embedded=True, threads=4, poll_interval=1.0, lease=300.0, max_attempts=50,
        backoff_base=2.0, backoff_cap=600.0, stop_timeout=10.0)
    [integration] = config.integrations
    assert (integration.basic_auth, dict(integration.target_settings),
            integration.return_target_id) == (None, {}, False)


@pytest.mark.parametrize("written, seconds", [
    ("7", 7.0),
    ("0.25", 0.25),
    ("300ms", 0.3),
    ("2.5s", 2.5),
    (".5s", 0.5),
    ("5m", 300.0),
    ("2h", 7200.0),
    ("1d", 86400.0),
    ("10 s", 10.0),
], ids=["bare-seconds", "bare-fraction", "ms", "s", "leading-dot", "m", "h", "d", "spaced"])
def test_durations_become_float_seconds(written, seconds):
    config = parse(with_setting("diy", f"write_timeout = {written}"))

    assert config.write_timeout == seconds
    assert isinstance(config.write_timeout, float)


@pytest.mark.parametrize("written, size", [
    ("1048576", 1048576),
    ("512k", 512 * 1024),
    ("512K", 512 * 1024),
    ("1M", 1024 * 1024),
    ("2m", 2 * 1024 * 1024),
], ids=["bytes", "k", "K", "M", "m"])
def test_sizes_become_int_bytes(written, size):
    assert parse(with_setting("diy", f"max_body = {written}")).max_body == size


@pytest.mark.parametrize("written, value", [
    ("yes", True), ("no", False), ("true", True), ("false", False),
    ("on", True), ("off", False), ("1", True), ("0", False), ("Yes", True), ("FALSE", False),
], ids=lambda value: str(value))
def test_booleans_accept_the_usual_words(written, value):
    assert parse(with_setting("dispatcher", f"embedded = {written}")).dispatcher.embedded is value


BAD_VALUES = [
    ("diy", "synchronous = off", "[diy] synchronous: expected one of full, normal"),
    ("diy", "write_timeout = 0", "[diy] write_timeout: must be more than 0"),
    ("diy", "write_timeout = -1s", "[diy] write_timeout: expected a duration"),
    ("diy", "write_timeout = 3 sec", "[diy] write_timeout: expected a duration"),
    ("diy", "create_timeout = 3650.5d", "[diy] create_timeout: must be at most 3650d"),
    ("diy", "retention = 1w", "[diy] retention: expected a duration"),
    ("diy", "max_body = 1G", "[diy] max_body: expected a number of bytes"),
    ("diy", "max_body = 0", "[diy] max_body: must be more than 0"),
    ("diy", "log_level = verbose", "[diy] log_level: expected one of debug, info"),
    ("diy", "server_name = https://dmp.example.com", "[diy] server_name: expected a host name"),
    ("diy", "server_name = dmp.example.com:443", "[diy] server_name: expected a host name"),
    ("dispatcher", "embedded = maybe", "[dispatcher] embedded: expected yes or no"),
    ("dispatcher", "threads = 0", "[dispatcher] threads: expected a whole number from 1 to 256"),
    ("dispatcher", "threads = 257", "[dispatcher] threads: expected a whole number from 1"),
    ("dispatcher", "threads = four", "[dispatcher] threads: expected a whole number"),
    ("dispatcher", "threads = 4.0", "[dispatcher] threads: expected a whole number"),
    ("dispatcher", "max_attempts = 0", "[dispatcher] max_attempts: expected a whole number of at"),
    ("dispatcher", "poll_interval = 0ms", "[dispatcher] poll_interval: must be more than 0"),
    ("dispatcher", "lease = soon", "[dispatcher] lease: expected a duration"),
    ("dispatcher", "backoff_cap = 1s", "[dispatcher] backoff_cap: must be at least backoff_base"),
    ("dispatcher", "stop_timeout = -1", "[dispatcher] stop_timeout: expected a duration"),
    ("dispatcher", "takeover_after = 500ms", "[dispatcher] takeover_after: must be at least 1s"),
    ("integration:demo", "return_target_id = maybe",
     "[integration:demo] return_target_id: expected yes or no"),
    ("integration:demo", "basic_auth = nocolon",
     "[integration:demo] basic_auth: expected USER:PASSWORD"),
    ("integration:demo", "basic_auth = user:", "[integration:demo] basic_auth: expected USER"),
    ("integration:demo", "target.url = env:", "[integration:demo] target.url: env: needs"),
]


@pytest.mark.parametrize("section, line, message", BAD_VALUES,
                         ids=[line for _, line, _ in BAD_VALUES])
def test_a_bad_value_is_refused_naming_its_section_and_key(section, line, message):
    assert parse_error(with_setting(section, line)).startswith(f"diy.ini: {message}")


@pytest.mark.parametrize("line, message", [
    ("path = dmp", 'path: must start with "/"'),
    ("path = /dmp?x=1", "path: must be a plain path"),
    ("hmac_secrets = ,", "hmac_secrets: at least one secret is required"),
    ("hmac_secrets = env:EMPTY", "hmac_secrets: a secret is empty"),
    ("target = no such target", "target: expected a builtin target (webhook, thetradedesk, criteo) or "
                                "package.module:Class"),
], ids=["path-relative", "path-query", "secrets-empty-list", "secret-empty-value",
        "target-not-a-name"])
def test_a_bad_integration_value_is_refused_naming_its_key(line, message):
    key = line.split(" = ")[0]
    text = MINIMAL.replace(next(k for k in MINIMAL.splitlines() if k.startswith(key)), line)

    error = parse_error(text, environ={"EMPTY": ""})

    assert error.startswith(f"diy.ini: [integration:demo] {message}")


@pytest.mark.parametrize("spec", ["targets.webhook:WebhookTarget", "targets.webhook.WebhookTarget"],
                         ids=["package.module:Class", "dotted, as older configurations wrote it"])
def test_a_target_of_ones_own_is_named_package_module_colon_class(spec):
    text = MINIMAL.replace("target = webhook\n", f"target = {spec}\n")

    (integration,) = parse(text).integrations

    assert load_target_class(integration.target) is WebhookTarget


@pytest.mark.parametrize("line", ["metrics_token =", "metrics_token = env:EMPTY", "metrics_token = env:BLANK"],
                         ids=["inline", "empty-variable", "blank-variable"])
def test_an_empty_metrics_token_is_refused_as_it_would_open_metrics_to_anyone(line):
    error = parse_error(with_setting("diy", line), environ={"EMPTY": "", "BLANK": "  "})

    assert error.startswith("diy.ini: [diy] metrics_token: the token is empty")



@pytest.mark.parametrize("key", ["path", "hmac_secrets", "target"])
def test_an_integration_without_a_required_key_is_refused(key):
    text = "\n".join(line for line in MINIMAL.splitlines() if not line.startswith(key))

    assert parse_error(text).startswith(f"diy.ini: [integration:demo] {key}: ")


@pytest.mark.parametrize("replacement", ["", "[diy]\n", "[diy]\ndatabase =\n"],
                         ids=["no-diy-section", "no-database-key", "empty-database"])
def test_a_database_is_required(replacement):
    text = MINIMAL.replace("[diy]\ndatabase = /var/lib/diy/diy.sqlite3\n", replacement)

    assert parse_error(text) == "diy.ini: [diy] database: required: the path of the SQLite file or a postgresql:// URL"


def test_a_configuration_without_integrations_is_refused():
    text = "[diy]\ndatabase = diy.sqlite3\n"

    assert parse_error(text) == "diy.ini: at least one [integration:NAME] section is required"


@pytest.mark.parametrize("section, line", [
    ("diy", "databse = diy.sqlite3"),
    ("diy", "Database = diy.sqlite3"),
    ("dispatcher", "thread = 4"),
    ("integration:demo", "hmac_secret = s3cr3t"),
    ("integration:demo", "target. = x"),
], ids=["diy-typo", "diy-case", "dispatcher-typo", "integration-typo", "target-empty-name"])
def test_an_unknown_key_is_refused_by_name(section, line):
    key = line.split(" = ")[0]

    error = parse_error(with_setting(section, line))

    assert error.startswith(f"diy.ini: [{section}] {key}: unknown key; expected one of ")


@pytest.mark.parametrize("section", [
    "integraton:demo", "DEFAULT", "server", "integration:", "integration:no spaces",
], ids=["typo", "DEFAULT", "other", "integration-without-name", "integration-bad-name"])
def test_an_unknown_section_or_bad_integration_name_is_refused(section):
    error = parse_error(with_setting(section, "path = /other"))

    assert error.startswith(f"diy.ini: [{section}]: ")


@pytest.mark.parametrize("other_path", ["/dmp", "/dmp/", "/dmp//"],
                         ids=["same", "trailing-slash", "two-trailing-slashes"])
def test_two_integrations_cannot_share_a_path(other_path):
    text = MINIMAL + f"\n[integration:other]\npath = {other_path}\nhmac_secrets = x\ntarget = t\n"

    assert parse_error(text) == (
        "diy.ini: [integration:other] path: /dmp is already the path of [integration:demo]")


@pytest.mark.parametrize("path", ["/healthz", "/readyz/", "/metrics"])
def test_the_service_own_paths_are_reserved(path):
    error = parse_error(MINIMAL.replace("path = /dmp", f"path = {path}"))

    assert error.startswith("diy.ini: [integration:demo] path: ")
    assert "reserved" in error


@pytest.mark.parametrize("written, path", [
    ("/dmp", "/dmp"), ("/dmp/", "/dmp"), ("/a/b//", "/a/b"), ("/", "/"), ("//", "/"),
], ids=["plain", "trailing-slash", "nested", "root", "root-doubled"])
def test_paths_are_normalised_without_trailing_slash(written, path):
    [integration] = parse(MINIMAL.replace("path = /dmp", f"path = {written}")).integrations

    assert integration.path == path


@pytest.mark.parametrize("request_path, found", [
    ("/dmp", "demo"), ("/dmp/", "demo"), ("/other", "other"), ("/dmpx", None), ("/", None),
], ids=["exact", "trailing-slash", "second", "prefix-only", "root"])
def test_integration_for_path_finds_the_integration_the_dmp_calls(request_path, found):
    config = parse(MINIMAL + "\n[integration:other]\npath = /other\nhmac_secrets = x\ntarget = t\n")

    integration = config.integration_for_path(request_path)

    assert (integration.name if integration else None) == found


def test_several_hmac_secrets_are_accepted_for_rotation(tmp_path):
    (tmp_path / "next").write_text("n3xt")
    text = MINIMAL.replace("hmac_secrets = s3cr3t", "hmac_secrets = old, env:NEW ,file:next,")

    config = parse(text, environ={"NEW": "n3w"}, base_dir=tmp_path)

    assert config.integrations[0].hmac_secrets == (b"old", b"n3w", b"n3xt")


def test_env_and_file_secrets_are_resolved_relative_to_the_config_folder(
        tmp_path, monkeypatch):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "hmac").write_text("fr0m-f1le\n")
    (tmp_path / "secrets" / "token").write_text("t0ken\r\n")
    (tmp_path / "diy.ini").write_text(MINIMAL.replace(
        "hmac_secrets = s3cr3t",
        "hmac_secrets = file:secrets/hmac, env:DIY_SECRET\n"
        "basic_auth = env:DIY_AUTH\n"
        "target.token = file:secrets/token\n"
        "target.region = env:REGION\n"
        "target.url = http://x/y"))
    monkeypatch.chdir(tmp_path / "secrets")

    [integration] = load_config(tmp_path / "diy.ini", environ={
        "DIY_SECRET": "fr0m-env", "DIY_AUTH": "dmp:pa:ss", "REGION": "eu"}).integrations

    assert integration.hmac_secrets == (b"fr0m-f1le", b"fr0m-env")
    assert integration.basic_auth == ("dmp", "pa:ss")
    assert dict(integration.target_settings) == {
        "token": "t0ken", "region": "eu", "url": "http://x/y"}


def test_load_config_reads_env_secrets_from_the_process_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DIY_TEST_SECRET", "fr0m-os")
    (tmp_path / "diy.ini").write_text(
        MINIMAL.replace("hmac_secrets = s3cr3t", "hmac_secrets = env:DIY_TEST_SECRET"))

    assert load_config(tmp_path / "diy.ini").integrations[0].hmac_secrets == (b"fr0m-os",)


def test_parse_config_does_not_read_the_process_environment(monkeypatch):
    monkeypatch.setenv("DIY_TEST_SECRET", "fr0m-os")
    text = MINIMAL.replace("hmac_secrets = s3cr3t", "hmac_secrets = env:DIY_TEST_SECRET")

    assert "DIY_TEST_SECRET is not set" in parse_error(text)


@pytest.mark.parametrize("key, line", [
    ("hmac_secrets", "hmac_secrets = s3cr3t, env:DIY_MISSING"),
    ("basic_auth", "basic_auth = env:DIY_MISSING"),
    ("target.token", "target.token = env:DIY_MISSING"),
], ids=["hmac_secrets", "basic_auth", "target"])
def test_a_missing_environment_variable_is_named_with_its_key(key, line):
    text = with_setting("integration:demo", line, MINIMAL.replace("hmac_secrets = s3cr3t\n", ""))

    assert parse_error(text, environ={"OTHER": "x"}) == (
        f"diy.ini: [integration:demo] {key}: environment variable DIY_MISSING is not set")


def test_an_unreadable_secret_file_is_named_with_its_key(tmp_path):
    error = parse_error(with_setting("integration:demo", "target.token = file:missing"),
                        base_dir=tmp_path)

    assert error.startswith(
        f"diy.ini: [integration:demo] target.token: cannot read {tmp_path / 'missing'} (")


SECRET = "hunter2-Sup3rS3cret"


@pytest.mark.parametrize("text", [
    with_setting("integration:demo", f"basic_auth = {SECRET}"),
    with_setting("integration:demo", "basic_auth = env:AUTH"),
    with_setting("integration:demo", f"basic_auth = env:AUTH\nbasic_auth = {SECRET}"),
    with_setting("integration:demo", f"basic_auth = u:{SECRET}\nthreads = 4"),
    with_setting("integration:demo", SECRET),
    with_setting("diy", f"log_level = info\n  {SECRET}"),
    with_setting("diy", f"max_body = {SECRET}"),
    f"{SECRET}\n" + MINIMAL,
    MINIMAL.replace("hmac_secrets = s3cr3t", f"hmac_secrets = {SECRET}, env:GONE"),
], ids=["basic-auth-without-colon", "basic-auth-from-env-without-colon", "duplicate-key",
        "next-key-unknown", "line-without-equals", "continuation-line", "wrong-key",
        "before-any-section", "other-secret-missing"])
def test_secrets_never_appear_in_error_messages(text):
    with pytest.raises(ConfigError) as caught:
        parse(text, environ={"AUTH": SECRET})

    error = caught.value
    shown = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    assert SECRET not in str(error)
    assert SECRET not in shown, "a chained exception quotes the secret"


def test_secrets_never_appear_in_the_repr_of_the_config(tmp_path):
    (tmp_path / "token").write_text("t0ken-fr0m-f1le")
    text = MINIMAL.replace("hmac_secrets = s3cr3t", f"hmac_secrets = {SECRET}, env:SECOND\n"
                           f"basic_auth = dmp:pa55w0rd\ntarget.token = file:token")

    shown = repr(parse(text, environ={"SECOND": "env-s3cond"}, base_dir=tmp_path))

    for secret in (SECRET, "env-s3cond", "pa55w0rd", "t0ken-fr0m-f1le"):
        assert secret not in shown
    assert "Integration(name='demo', path='/dmp', target='webhook'" in shown


@pytest.mark.parametrize("written, relative_to_config", [
    ("diy.sqlite3", "diy.sqlite3"),
    ("data/diy.sqlite3", "data/diy.sqlite3"),
    ("../diy.sqlite3", "../diy.sqlite3"),
], ids=["same-folder", "subfolder", "parent"])
def test_a_relative_database_path_is_made_absolute_against_the_config_folder(
        tmp_path, monkeypatch, written, relative_to_config):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "diy.ini").write_text(
        MINIMAL.replace("/var/lib/diy/diy.sqlite3", written))
    monkeypatch.chdir(tmp_path)

    config = load_config("etc/diy.ini")

    assert config.database == os.path.normpath(tmp_path / "etc" / relative_to_config)
    assert config.source == "etc/diy.ini"


def test_an_absolute_database_path_is_kept():
    assert parse(MINIMAL).database == "/var/lib/diy/diy.sqlite3"


def test_load_config_on_a_missing_file_names_it(tmp_path):
    missing = tmp_path / "nope.ini"

    with pytest.raises(ConfigError) as caught:
        load_config(missing)

    assert str(caught.value) == (
        f"{missing}: cannot read the configuration file (No such file or directory)")


@pytest.mark.parametrize("text, message", [
    ("database = x\n[diy]\n", "diy.ini: line 1: a key before the first [section]"),
    (MINIMAL + "[diy]\n", "diy.ini: [diy]: line 8: the section appears twice"),
    (MINIMAL + "path = /again\n",
     "diy.ini: [integration:demo] path: line 8: the key appears twice"),
    ("[diy]\ndatabase = x\njust words\n",
     "diy.ini: line 3: expected [section], key = value or a comment"),
], ids=["key-before-section", "duplicate-section", "duplicate-key", "line-without-equals"])
def test_malformed_ini_is_refused_with_its_line(text, message):
    assert parse_error(text) == message


def test_inline_comments_need_whitespace_before_the_semicolon():
    text = MINIMAL.replace("hmac_secrets = s3cr3t", "hmac_secrets = a;b%c")

    assert parse(text).integrations[0].hmac_secrets == (b"a;b%c",)


@pytest.mark.parametrize("section, line", [
    ("integration:demo", "hmac_secrets = abc ;def"),
    ("integration:demo", "hmac_secrets = env:DIY_SECRET, abc ;def"),
    ("integration:demo", "basic_auth = user:pass ;word"),
    ("integration:demo", "target.secret = whsec_abc ; the receiver's key"),
    ("integration:demo", "target.header.Authorization = Bearer abc ;def"),
    ("integration:demo:customer:1", "target.token = abc ;def"),
    ("diy", "metrics_token = abc ;def"),
], ids=["hmac", "hmac-after-env", "basic-auth", "target-secret", "target-header", "customer-token", "metrics-token"])
def test_a_comment_after_a_secret_written_inline_is_refused_as_ambiguous(section, line):
    key = line.split(" = ")[0]
    text = MINIMAL.replace("hmac_secrets = s3cr3t\n", "") if key == "hmac_secrets" else MINIMAL

    error = parse_error(with_setting(section, line, text), environ={"DIY_SECRET": "x" * 16})

    assert error == (f"diy.ini: [{section}] {key}: ' ;' after a secret written inline is ambiguous (a comment, "
                     "or part of the secret?); put the comment on a line of its own, or the secret in env: or file:")
    assert "def" not in error and "word" not in error


@pytest.mark.parametrize("line, kept", [
    ("hmac_secrets = env:DIY_SECRET, file:hmac   ; rotate: both accepted", (b"x" * 16, b"0123456789abcdef")),
    ("target.url = http://127.0.0.1:9/events   ; where events go", "http://127.0.0.1:9/events"),
    ("target.timeout = 5                       ; seconds", "5"),
], ids=["env-and-file-secrets", "target-url", "target-setting"])
def test_a_comment_after_a_reference_or_a_plain_setting_is_still_a_comment(tmp_path, line, kept):
    (tmp_path / "hmac").write_text("0123456789abcdef")
    key = line.split(" = ")[0]
    text = MINIMAL.replace("hmac_secrets = s3cr3t\n", "") if key == "hmac_secrets" else MINIMAL

    integration = parse(with_setting("integration:demo", line, text), base_dir=tmp_path,
                        environ={"DIY_SECRET": "x" * 16}).integrations[0]

    assert (integration.hmac_secrets if key == "hmac_secrets" else integration.target_settings[key[7:]]) == kept


def unsafe_warnings(caplog):
    return [record.getMessage() for record in caplog.records
            if record.name == "diy.config" and record.levelname == "WARNING"]


@pytest.mark.parametrize("secrets, warned", [
    ("s3cr3t", "secret #1 is shorter"),
    ("0123456789abcdef, x", "secret #2 is shorter"),
    ("a, b", "secrets #1, #2 are shorter"),
    ("0123456789abcdef", None),
], ids=["one-short", "second-short", "both-short", "16-bytes"])
def test_an_hmac_secret_shorter_than_16_bytes_is_warned_about_in_one_line(caplog, secrets, warned):
    parse(MINIMAL.replace("hmac_secrets = s3cr3t", f"hmac_secrets = {secrets}"))

    lines = unsafe_warnings(caplog)
    if warned is None:
        assert lines == []
    else:
        (line,) = lines
        assert line.startswith(f"unsafe configuration at=diy.ini: [integration:demo] hmac_secrets problem={warned} "
                               "than 16 bytes: whoever captures one signed request can guess")
        assert "s3cr3t" not in line


@pytest.mark.parametrize("mode, warned", [(0o644, True), (0o602, True), (0o640, False), (0o600, False)],
                         ids=["world-readable", "world-writable", "group-readable", "owner-only"])
def test_a_secret_file_open_to_every_user_is_warned_about(tmp_path, caplog, mode, warned):
    secret = tmp_path / "hmac"
    secret.write_text("0123456789abcdef-secret\n")
    secret.chmod(mode)

    parse(MINIMAL.replace("hmac_secrets = s3cr3t", "hmac_secrets = file:hmac"), base_dir=tmp_path)

    expected = [f"unsafe configuration at=diy.ini problem=the secret file {secret} can be read or changed by "
                f"every user of this machine (mode {mode:o}); chmod 600 it"]
    assert unsafe_warnings(caplog) == (expected if warned else [])


@pytest.mark.parametrize("mode, secrets, warned", [
    (0o644, "hmac_secrets = 0123456789abcdef-inline", "[integration:demo] hmac_secrets"),
    (0o604, "hmac_secrets = env:DIY_SECRET\ndatabase = postgresql://diy:hunter2-hunter2@db.internal/outbox", "[diy] database"),
    (0o666, "hmac_secrets = env:DIY_SECRET\ntarget.header.Authorization = Bearer abc", "[integration:demo] target.header.Authorization"),
    (0o644, "hmac_secrets = env:DIY_SECRET, file:hmac", None),
    (0o640, "hmac_secrets = 0123456789abcdef-inline", None),
    (0o600, "hmac_secrets = 0123456789abcdef-inline", None),
], ids=["world-readable-inline-hmac", "world-readable-password-in-the-url", "world-writable-inline-header",
        "world-readable-without-inline-secrets", "group-readable", "owner-only"])
def test_a_config_file_holding_inline_secrets_open_to_every_user_is_warned_about(tmp_path, caplog, mode, secrets, warned):
    (tmp_path / "hmac").write_text("0123456789abcdef-in-a-file\n")
    (tmp_path / "hmac").chmod(0o600)
    text = MINIMAL.replace("hmac_secrets = s3cr3t", secrets.split("\n")[0])
    for extra in secrets.split("\n")[1:]:
        if extra.startswith("database"):
            text = text.replace("database = /var/lib/diy/diy.sqlite3", extra)
        else:
            text = text.replace("target = webhook\n", f"target = webhook\n{extra}\n")
    path = tmp_path / "diy.ini"
    path.write_text(text)
    path.chmod(mode)

    load_config(path, environ={"DIY_SECRET": "0123456789abcdef-from-env"})

    expected = [f"unsafe configuration at={path} problem=the configuration file {path}, which holds secrets written "
                f"inline ({warned}), can be read or changed by every user of this machine (mode {mode:o}); chmod 600 it"]
    assert unsafe_warnings(caplog) == (expected if warned else [])
    assert not [secret for secret in ("0123456789abcdef", "hunter2", "Bearer abc") if secret in caplog.text]


def test_sign_checks_a_secret_file_as_the_configuration_does(tmp_path, caplog, capsys):
    secret, body = tmp_path / "hmac", tmp_path / "body.json"
    secret.write_text("0123456789abcdef-secret\n")
    secret.chmod(0o644)
    body.write_bytes(b'{"Type":"VALIDATE"}')

    assert cli_main(["sign", "--secret", f"file:{secret}", str(body)]) == 0

    assert capsys.readouterr().out.strip() == sign(b"0123456789abcdef-secret", body.read_bytes())
    assert unsafe_warnings(caplog) == [f"unsafe configuration at=--secret problem=the secret file {secret} can be read "
                                       "or changed by every user of this machine (mode 644); chmod 600 it"]


def test_sign_names_a_secret_file_it_cannot_read_in_one_line(tmp_path, capsys):
    assert cli_main(["sign", "--secret", f"file:{tmp_path / 'missing'}", "/dev/null"]) == 2

    (line,) = capsys.readouterr().err.splitlines()
    assert line == f"diy-wsgi: --secret: cannot read {tmp_path / 'missing'} (No such file or directory)"


def test_the_warnings_reach_stderr_as_one_line_each_before_logging_is_set_up(tmp_path):
    """`diy-wsgi sign --config` loads the configuration as every command does, before any logging."""
    (tmp_path / "hmac").write_text("tiny5\n")
    (tmp_path / "hmac").chmod(0o644)
    (tmp_path / "diy.ini").write_text(MINIMAL.replace("hmac_secrets = s3cr3t", "hmac_secrets = file:hmac"))

    result = subprocess.run([sys.executable, "-m", "diy", "sign", "--config", str(tmp_path / "diy.ini")],
                            input="", capture_output=True, text=True, timeout=60, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})

    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2
    assert "the secret file" in lines[0] and "hmac_secrets problem=secret #1 is shorter than 16 bytes" in lines[1]
    assert "tiny5" not in result.stderr


def test_the_config_objects_are_frozen():
    config = parse(MINIMAL)

    with pytest.raises(AttributeError):
        config.database = "/tmp/other"
    with pytest.raises(TypeError):
        config.integrations[0].target_settings["url"] = "http://elsewhere"


# Per-customer accounts and dispatch limits.

ACCOUNTS = MINIMAL + """\
target.token = shared-default
target.advertiser = none

[integration:demo:customer:123]
target.advertiser = adv-123
target.token = env:TOKEN_123

[integration:demo:customer:456]
target.advertiser = adv-456
"""


def test_customer_sections_override_the_target_settings_per_customer():
    integration = parse(ACCOUNTS, environ={"TOKEN_123": "t-123"}).integrations[0]

    assert dict(integration.accounts["123"]) == {**integration.target_settings, "advertiser": "adv-123", "token": "t-123"}
    assert integration.accounts["456"]["token"] == "shared-default"


def test_without_customer_sections_there_is_one_shared_account():
    assert parse(MINIMAL).integrations[0].accounts == {}


def test_a_customer_section_takes_only_target_keys():
    message = parse_error(ACCOUNTS + "path = /other\n", environ={"TOKEN_123": "x"})

    assert "[integration:demo:customer:456] path: unknown key" in message


def test_a_customer_section_needs_its_integration():
    message = parse_error(MINIMAL + "\n[integration:other:customer:1]\ntarget.x = y\n")

    assert "[integration:other:customer:1]" in message and "no [integration:other]" in message


def test_customer_secrets_stay_out_of_the_repr():
    config = parse(ACCOUNTS, environ={"TOKEN_123": "t-123-secret"})

    assert "t-123-secret" not in repr(config)


@pytest.mark.parametrize("written,per_second", [("10", 10), ("10/s", 10), ("250/m", 250 / 60), ("3600/h", 1)],
                         ids=["bare", "per-second", "per-minute", "per-hour"])
def test_calls_per_second_takes_a_rate(written, per_second):
    config = parse(with_setting("integration:demo", f"calls_per_second = {written}"))

    assert config.integrations[0].calls_per_second == pytest.approx(per_second)


@pytest.mark.parametrize("written", ["0", "fast", "10/week", "-1"])
def test_a_bad_rate_is_refused(written):
    assert "calls_per_second" in parse_error(with_setting("integration:demo", f"calls_per_second = {written}"))


@pytest.mark.parametrize("lease, timeout, refused", [("3s", "2", True), ("4s", "2", False), ("5m", "30", False)])
def test_a_lease_shorter_than_two_platform_timeouts_is_refused(tmp_path, lease, timeout, refused):
    """A lease that runs out while its delivery is still calling the platform lets another
    dispatcher send the same batch at the same time (found by the reliability suites)."""
    from diy.service import Service
    from tests.support import make_config

    config = make_config(tmp_path, "http://127.0.0.1:9/events", dispatcher={"lease": lease},
                         integration={"target.timeout": timeout})
    if refused:
        with pytest.raises(ConfigError, match=r"\[dispatcher\] lease \(3s\) must be at least 2 times target.timeout"
                                             r" of \[integration:demo\] \(2s\)"):
            Service(config)
    else:
        Service(config).close()


def test_a_postgresql_url_is_kept_as_given_and_its_metrics_folder_is_local(tmp_path):
    url = "postgresql://diy@db.internal:5432/outbox?sslmode=verify-full"
    config = parse(MINIMAL.replace("database = /var/lib/diy/diy.sqlite3", f"database = {url}"))

    assert config.database == url
    assert config.metrics_dir.startswith(tempfile.gettempdir())


def test_a_postgresql_password_is_a_secret_and_only_for_postgresql(tmp_path):
    base = MINIMAL.replace("database = /var/lib/diy/diy.sqlite3", "database = postgresql://diy@db/outbox")
    config = parse(with_setting("diy", "database_password = env:PGPW", base=base), environ={"PGPW": "pw"})
    assert config.database_password == "pw" and "pw" not in repr(config)

    assert parse_error(with_setting("diy", "database_password = x")).startswith(
        "diy.ini: [diy] database_password: only for a PostgreSQL database")


@pytest.mark.parametrize("url, message", [
    ("postgresql://diy@db:port/outbox", "not a valid postgresql:// URL"),
    ("postgresql://diy@db:5432", "must name a database"),
    ("mysql://diy@db/outbox", "expected the path of the SQLite file or a postgresql:// URL"),
])
def test_a_bad_database_url_is_refused_without_repeating_it(url, message):
    error = parse_error(MINIMAL.replace("database = /var/lib/diy/diy.sqlite3", f"database = {url}"))
    assert message in error and url not in error
