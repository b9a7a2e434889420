"""Settings: seed env var names, defaults, precedence, parsing, and the ConfigError contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.config import (
    ENV_VARS,
    REQUIRED_KEYS,
    SECRET_KEYS,
    Settings,
    load_settings,
    settings_reference,
)
from reconciler.errors import ConfigError
from reconciler.model import Action

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yml"

TOKEN = "opencti-token-0123456789"
CLIENT_SECRET = "client-secret-9876543210~x"

#: The smallest environment that satisfies every required key.
REQUIRED_ENV = {
    "OPENCTI_URL": "http://opencti.local:8080",
    "OPENCTI_TOKEN": TOKEN,
    "CONNECTOR_ID": "6f0f4b9e-2b1c-4c51-9d5f-0d5f3c1c2a10",
    "CONNECTOR_LIVE_STREAM_ID": "stream-1",
    "MICROSOFT_DEFENDER_INTEL_TENANT_ID": "tenant-1",
    "MICROSOFT_DEFENDER_INTEL_CLIENT_ID": "client-1",
    "MICROSOFT_DEFENDER_INTEL_CLIENT_SECRET": CLIENT_SECRET,
}


def load(env: dict[str, str] | None = None, path: Path | str | None = None, **kw: Any) -> Settings:
    return load_settings(path, env={**REQUIRED_ENV, **(env or {})}, **kw)


def write(directory: Path, text: str, name: str = "config.yml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def plain(value: Any) -> Any:
    """Secrets compared by value."""
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


# -- every env var maps to its key ------------------------------------------------------------

SEED_ENV = [
    ("OPENCTI_URL", "opencti.url", "https://cti.example.org/", "https://cti.example.org"),
    ("OPENCTI_TOKEN", "opencti.token", "tok-abcdef", "tok-abcdef"),
    ("CONNECTOR_ID", "connector.id", "3b8e6f1c-0000-4000-8000-000000000001", None),
    ("CONNECTOR_NAME", "connector.name", "Microsoft Defender Intel", None),
    ("CONNECTOR_LIVE_STREAM_ID", "connector.live_stream_id", "live-42", None),
    ("CONNECTOR_LIVE_STREAM_LISTEN_DELETE", "connector.live_stream_listen_delete", "false", False),
    (
        "CONNECTOR_LIVE_STREAM_NO_DEPENDENCIES",
        "connector.live_stream_no_dependencies",
        "no",
        False,
    ),
    ("CONNECTOR_LOG_LEVEL", "connector.log_level", "DEBUG", "debug"),
    ("MICROSOFT_DEFENDER_INTEL_TENANT_ID", "microsoft_defender_intel.tenant_id", "t-9", None),
    ("MICROSOFT_DEFENDER_INTEL_CLIENT_ID", "microsoft_defender_intel.client_id", "c-9", None),
    (
        "MICROSOFT_DEFENDER_INTEL_CLIENT_SECRET",
        "microsoft_defender_intel.client_secret",
        "s-9999",
        None,
    ),
    (
        "MICROSOFT_DEFENDER_INTEL_LOGIN_URL",
        "microsoft_defender_intel.login_url",
        "https://login.microsoftonline.us",
        None,
    ),
    (
        "MICROSOFT_DEFENDER_INTEL_BASE_URL",
        "microsoft_defender_intel.base_url",
        "https://api-us.securitycenter.microsoft.com",
        None,
    ),
    (
        "MICROSOFT_DEFENDER_INTEL_RESOURCE_PATH",
        "microsoft_defender_intel.resource_path",
        "/api/v2/indicators",
        None,
    ),
    ("MICROSOFT_DEFENDER_INTEL_EXPIRE_TIME", "microsoft_defender_intel.expire_time", "7", 7),
    (
        "MICROSOFT_DEFENDER_INTEL_ACTION",
        "microsoft_defender_intel.action",
        "BlockAndRemediate",
        Action.BLOCK_AND_REMEDIATE,
    ),
    (
        "MICROSOFT_DEFENDER_INTEL_PASSIVE_ONLY",
        "microsoft_defender_intel.passive_only",
        "true",
        True,
    ),
]

NEW_ENV = [
    ("OPENCTI_SSL_VERIFY", "opencti.ssl_verify", "yes", True),
    (
        "MICROSOFT_DEFENDER_INTEL_SCOPE",
        "microsoft_defender_intel.scope",
        "https://api-gcc.securitycenter.microsoft.us/.default",
        None,
    ),
    (
        "MICROSOFT_DEFENDER_INTEL_OWNERSHIP_TAG",
        "microsoft_defender_intel.ownership_tag",
        "cti-sync",
        None,
    ),
    (
        "MICROSOFT_DEFENDER_INTEL_ADOPT_TAGS",
        "microsoft_defender_intel.adopt_tags",
        "OpenCTI Microsoft Defender Intel, legacy ,,",
        ("OpenCTI Microsoft Defender Intel", "legacy"),
    ),
    (
        "MICROSOFT_DEFENDER_INTEL_RBAC_GROUP_NAMES",
        "microsoft_defender_intel.rbac_group_names",
        "Servers,Workstations",
        ("Servers", "Workstations"),
    ),
    (
        "MICROSOFT_DEFENDER_INTEL_RECOMMENDED_ACTIONS",
        "microsoft_defender_intel.recommended_actions",
        "Isolate the device",
        None,
    ),
    (
        "MICROSOFT_DEFENDER_INTEL_GENERATE_ALERT",
        "microsoft_defender_intel.generate_alert",
        "0",
        False,
    ),
    (
        "MICROSOFT_DEFENDER_INTEL_EDUCATE_URL",
        "microsoft_defender_intel.educate_url",
        "https://intranet.example.org/security",
        None,
    ),
    ("RECONCILER_INTERVAL_SECONDS", "reconciler.interval_seconds", "60", 60),
    ("RECONCILER_DRY_RUN", "reconciler.dry_run", "TRUE", True),
    ("RECONCILER_MAX_DELETES", "reconciler.max_deletes", "0", 0),
    ("RECONCILER_MAX_DELETE_RATIO", "reconciler.max_delete_ratio", "0.25", 0.25),
    ("RECONCILER_QUOTA", "reconciler.quota", "12000", 12000),
    (
        "RECONCILER_IGNORE_FIELDS",
        "reconciler.ignore_fields",
        "title, description",
        ("title", "description"),
    ),
    ("RECONCILER_HTTP_PORT", "reconciler.http_port", "0", 0),
    ("RECONCILER_LOG_FORMAT", "reconciler.log_format", "JSON", "json"),
    ("RECONCILER_STATE_PATH", "reconciler.state_path", "/var/lib/rec/state.json", None),
    (
        "OPENCTI_LISTING_FILTERS",
        "opencti.listing_filters",
        '{"mode": "and", "filters": [{"key": ["revoked"], "values": ["false"]}]}',
        {"mode": "and", "filters": [{"key": ["revoked"], "values": ["false"]}]},
    ),
    (
        "MICROSOFT_DEFENDER_INTEL_CONNECT_TIMEOUT",
        "microsoft_defender_intel.connect_timeout",
        "5",
        5.0,
    ),
    (
        "MICROSOFT_DEFENDER_INTEL_READ_TIMEOUT",
        "microsoft_defender_intel.read_timeout",
        "300",
        300.0,
    ),
    ("RECONCILER_REJECTED_RETRY_HOURS", "reconciler.rejected_retry_hours", "0", 0.0),
    ("RECONCILER_CHURN_RUNS", "reconciler.churn_runs", "5", 5),
    ("RECONCILER_WRITE_BACK", "reconciler.write_back", "no", False),
    ("RECONCILER_SIGHTINGS", "reconciler.sightings", "false", False),
    ("RECONCILER_SIGHTINGS_INTERVAL_SECONDS", "reconciler.sightings_interval_seconds", "60", 60),
    (
        "MICROSOFT_DEFENDER_INTEL_GRAPH_URL",
        "microsoft_defender_intel.graph_url",
        "https://graph.microsoft.us/",
        "https://graph.microsoft.us",
    ),
    (
        "MICROSOFT_DEFENDER_INTEL_GRAPH_SCOPE",
        "microsoft_defender_intel.graph_scope",
        "https://graph.microsoft.us/.default",
        None,
    ),
    ("RECONCILER_TENANT", "reconciler.tenant", " contoso ", "contoso"),
    ("RECONCILER_LEADER_ELECTION", "reconciler.leader_election", "yes", True),
    ("RECONCILER_LEASE_NAME", "reconciler.lease_name", "rel-reconciler", None),
    ("RECONCILER_LEASE_NAMESPACE", "reconciler.lease_namespace", "secops", None),
    ("RECONCILER_LEASE_DURATION_SECONDS", "reconciler.lease_duration_seconds", "30", 30.0),
    ("RECONCILER_RENEW_DEADLINE_SECONDS", "reconciler.renew_deadline_seconds", "20", 20.0),
    ("RECONCILER_RETRY_PERIOD_SECONDS", "reconciler.retry_period_seconds", "3", 3.0),
    (
        "RECONCILER_KUBERNETES_API_URL",
        "reconciler.kubernetes_api_url",
        "https://127.0.0.1:6443/",
        "https://127.0.0.1:6443",
    ),
    ("RECONCILER_KUBERNETES_TOKEN_FILE", "reconciler.kubernetes_token_file", "/run/tok", None),
    (
        "POLICY_RULES",
        "policy.rules",
        '[{"name": "partners", "match": {"labels": ["partner"]}, "action": "alert"}]',
        ({"name": "partners", "match": {"labels": ["partner"]}, "action": "Alert"},),
    ),
    ("POLICY_ON_REVOKE", "policy.on_revoke", "Audit", "audit"),
    ("POLICY_ON_EXPIRE", "policy.on_expire", "audit", "audit"),
    ("POLICY_SKIP_LABEL", "policy.skip_label", "no-defender", None),
    (
        "POLICY_EXCLUSIONS",
        "policy.exclusions",
        '[{"name": "own", "cidrs": ["203.0.113.0/24"]}]',
        ({"name": "own", "cidrs": ["203.0.113.0/24"]},),
    ),
    (
        "POLICY_KNOWN_RBAC_GROUPS",
        "policy.known_rbac_groups",
        "Servers,Laptops",
        ("Servers", "Laptops"),
    ),
]


@pytest.mark.parametrize(
    ("env_var", "key", "raw", "expected"), SEED_ENV, ids=[r[0] for r in SEED_ENV]
)
def test_seed_env_var_sets_key(env_var: str, key: str, raw: str, expected: Any) -> None:
    settings = load({env_var: raw})
    assert ENV_VARS[key] == env_var
    assert plain(settings.get(key)) == (raw if expected is None else expected)


@pytest.mark.parametrize(
    ("env_var", "key", "raw", "expected"), NEW_ENV, ids=[r[0] for r in NEW_ENV]
)
def test_new_env_var_sets_key(env_var: str, key: str, raw: str, expected: Any) -> None:
    settings = load({env_var: raw})
    assert ENV_VARS[key] == env_var
    value = settings.get(key)
    if key in ("reconciler.state_path", "reconciler.kubernetes_token_file"):
        value = str(value)
    assert plain(value) == (raw if expected is None else expected)


def test_ca_bundle_env_var(tmp_path: Path) -> None:
    pem = write(tmp_path, "-----BEGIN CERTIFICATE-----\n", "ca.pem")
    settings = load({"MICROSOFT_DEFENDER_INTEL_CA_BUNDLE": str(pem)})
    assert settings.microsoft_defender_intel.ca_bundle == pem


def test_every_key_is_covered_by_the_tables() -> None:
    covered = {row[1] for row in SEED_ENV + NEW_ENV} | {"microsoft_defender_intel.ca_bundle"}
    assert covered == set(ENV_VARS)


def test_env_var_names_follow_section_key_scheme() -> None:
    for dotted, env_var in ENV_VARS.items():
        assert env_var == dotted.replace(".", "_").upper()
    assert len(set(ENV_VARS.values())) == len(ENV_VARS)


# -- defaults ---------------------------------------------------------------------------------

SEED_DEFAULTS = {
    "opencti.ssl_verify": False,
    "opencti.listing_filters": None,
    "connector.name": "OpenCTI Defender Reconciler",
    "connector.live_stream_listen_delete": True,
    "connector.live_stream_no_dependencies": True,
    "connector.log_level": "error",
    "microsoft_defender_intel.login_url": "https://login.microsoft.com",
    "microsoft_defender_intel.base_url": "https://api.securitycenter.microsoft.com",
    "microsoft_defender_intel.resource_path": "/api/indicators",
    "microsoft_defender_intel.expire_time": 30,
    "microsoft_defender_intel.action": None,  # the seed's "Alert"; None = score-based
    "microsoft_defender_intel.passive_only": False,
    "microsoft_defender_intel.scope": "https://api.securitycenter.microsoft.com/.default",
    "microsoft_defender_intel.ca_bundle": None,
    "microsoft_defender_intel.ownership_tag": "opencti",
    "microsoft_defender_intel.adopt_tags": (),
    "microsoft_defender_intel.rbac_group_names": (),
    "microsoft_defender_intel.recommended_actions": None,
    "microsoft_defender_intel.generate_alert": True,
    "microsoft_defender_intel.educate_url": None,
    "reconciler.interval_seconds": 300,
    "reconciler.dry_run": False,
    "reconciler.max_deletes": 1000,
    "reconciler.max_delete_ratio": 0.5,
    "reconciler.quota": 15000,
    "reconciler.ignore_fields": (),
    "reconciler.http_port": 9095,
    "reconciler.log_format": "auto",
    "reconciler.state_path": None,
    "microsoft_defender_intel.connect_timeout": 10.0,
    "microsoft_defender_intel.read_timeout": 120.0,
    "reconciler.rejected_retry_hours": 12.0,
    "reconciler.churn_runs": 3,
    "reconciler.write_back": True,
    "reconciler.sightings": True,
    "reconciler.sightings_interval_seconds": 300,
    "microsoft_defender_intel.graph_url": "https://graph.microsoft.com",
    "microsoft_defender_intel.graph_scope": "https://graph.microsoft.com/.default",
    "reconciler.tenant": None,
    "reconciler.leader_election": False,
    "reconciler.lease_name": None,
    "reconciler.lease_namespace": None,
    "reconciler.lease_duration_seconds": 15.0,
    "reconciler.renew_deadline_seconds": 10.0,
    "reconciler.retry_period_seconds": 2.0,
    "reconciler.kubernetes_api_url": None,
    "reconciler.kubernetes_token_file": None,
    "policy.rules": (),
    "policy.on_revoke": "delete",
    "policy.on_expire": "delete",
    "policy.skip_label": None,
    "policy.exclusions": (),
    "policy.known_rbac_groups": (),
}


@pytest.mark.parametrize(("key", "expected"), SEED_DEFAULTS.items(), ids=list(SEED_DEFAULTS))
def test_default(key: str, expected: Any) -> None:
    assert load().get(key) == expected


def test_required_keys() -> None:
    assert set(REQUIRED_KEYS) == {
        "opencti.url",
        "opencti.token",
        "connector.id",
        "connector.live_stream_id",
        "microsoft_defender_intel.tenant_id",
        "microsoft_defender_intel.client_id",
        "microsoft_defender_intel.client_secret",
    }
    assert set(SEED_DEFAULTS) | set(REQUIRED_KEYS) == set(ENV_VARS)


def test_every_field_is_described_with_its_env_var() -> None:
    for dotted, env_var in ENV_VARS.items():
        section, key = dotted.split(".")
        field = type(getattr(Settings(), section)).model_fields[key]
        assert field.description and env_var in field.description, dotted


def test_settings_reference_rows() -> None:
    rows = {row["key"]: row for row in settings_reference()}
    assert list(rows) == list(ENV_VARS)
    assert rows["reconciler.quota"]["default"] == 15000
    assert rows["reconciler.ignore_fields"]["default"] == []
    assert rows["opencti.token"]["required"] and rows["opencti.token"]["secret"]
    assert rows["connector.log_level"]["env"] == "CONNECTOR_LOG_LEVEL"


# -- precedence: override > env > file > default ------------------------------------------------


def test_precedence_env_over_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "reconciler:\n  interval_seconds: 120\n")
    assert load({"RECONCILER_INTERVAL_SECONDS": "60"}, path).reconciler.interval_seconds == 60


def test_precedence_override_over_env() -> None:
    settings = load({"RECONCILER_DRY_RUN": "false"}, overrides={"reconciler.dry_run": True})
    assert settings.reconciler.dry_run is True


def test_yaml_over_default(tmp_path: Path) -> None:
    path = write(tmp_path, "reconciler:\n  interval_seconds: 120\n")
    assert load(path=path).reconciler.interval_seconds == 120


def test_empty_env_means_default(tmp_path: Path) -> None:
    path = write(tmp_path, "reconciler:\n  interval_seconds: 120\n")
    env = {"RECONCILER_INTERVAL_SECONDS": "", "CONNECTOR_LOG_LEVEL": "  "}
    settings = load(env, path)
    assert settings.reconciler.interval_seconds == 120  # the file still counts
    assert settings.connector.log_level == "error"


def test_empty_yaml_value_means_default(tmp_path: Path) -> None:
    path = write(tmp_path, "microsoft_defender_intel:\n  expire_time:\n  action: ''\n")
    settings = load(path=path)
    assert settings.microsoft_defender_intel.expire_time == 30
    assert settings.microsoft_defender_intel.action is None


def test_none_override_is_skipped() -> None:
    settings = load({"RECONCILER_DRY_RUN": "yes"}, overrides={"reconciler.dry_run": None})
    assert settings.reconciler.dry_run is True


def test_default_path_is_config_yml_in_cwd(tmp_path: Path) -> None:
    write(tmp_path, "connector:\n  name: from-cwd\n")
    assert load().connector.name == "from-cwd"


def test_no_file_is_fine() -> None:
    assert load().connector.name == "OpenCTI Defender Reconciler"


def test_env_none_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in REQUIRED_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RECONCILER_QUOTA", "100")
    assert load_settings().reconciler.quota == 100


# -- parsing ----------------------------------------------------------------------------------

BOOL_WORDS = [
    ("true", True),
    ("True", True),
    ("YES", True),
    ("1", True),
    ("false", False),
    ("No", False),
    ("0", False),
    (" yes ", True),
]


@pytest.mark.parametrize(("raw", "expected"), BOOL_WORDS, ids=[r[0] for r in BOOL_WORDS])
def test_boolean_words(raw: str, expected: bool) -> None:
    assert load({"RECONCILER_DRY_RUN": raw}).reconciler.dry_run is expected


@pytest.mark.parametrize("raw", ["maybe", "2", "on", "ture"])
def test_boolean_rejects_other_words(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"reconciler\.dry_run .*true/false/yes/no/1/0"):
        load({"RECONCILER_DRY_RUN": raw})


LISTS = [
    ("adopt_tags: [a, b]", ("a", "b")),
    ("adopt_tags: 'a, b,, '", ("a", "b")),
    ("adopt_tags:\n    - ' a '\n    - ''", ("a",)),
    ("adopt_tags: []", ()),
]


@pytest.mark.parametrize(("line", "expected"), LISTS, ids=["list", "comma", "blanks", "empty"])
def test_yaml_lists(tmp_path: Path, line: str, expected: tuple[str, ...]) -> None:
    path = write(tmp_path, f"microsoft_defender_intel:\n  {line}\n")
    assert load(path=path).microsoft_defender_intel.adopt_tags == expected


def test_env_list_strips_blanks() -> None:
    settings = load({"MICROSOFT_DEFENDER_INTEL_RBAC_GROUP_NAMES": " , Servers ,, Labs , "})
    assert settings.microsoft_defender_intel.rbac_group_names == ("Servers", "Labs")


@pytest.mark.parametrize("raw", ["block", "BLOCK", " Block "])
def test_action_is_case_insensitive(raw: str) -> None:
    assert load({"MICROSOFT_DEFENDER_INTEL_ACTION": raw}).microsoft_defender_intel.action is (
        Action.BLOCK
    )


@pytest.mark.parametrize("raw", ["WARN", "Warning", "info"])
def test_log_level_is_case_insensitive(raw: str) -> None:
    assert load({"CONNECTOR_LOG_LEVEL": raw}).connector.log_level == raw.lower()


def test_pycti_keys_are_accepted_quietly(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "opencti:\n  json_logging: true\n"
        "connector:\n  type: STREAM\n  scope: indicator\n  live_stream_with_inferences: false\n",
    )
    assert load(path=path).connector.name == "OpenCTI Defender Reconciler"


def test_overrides_use_dotted_keys(tmp_path: Path) -> None:
    pem = write(tmp_path, "pem", "ca.pem")
    settings = load_settings(
        None,
        env={},
        overrides={
            "opencti.url": "http://127.0.0.1:1",
            "opencti.token": TOKEN,
            "connector.id": "x",
            "connector.live_stream_id": "s",
            "microsoft_defender_intel.tenant_id": "t",
            "microsoft_defender_intel.client_id": "c",
            "microsoft_defender_intel.client_secret": CLIENT_SECRET,
            "microsoft_defender_intel.ca_bundle": pem,
        },
    )
    assert settings.microsoft_defender_intel.ca_bundle == pem
    assert settings.opencti.url == "http://127.0.0.1:1"


def test_require_false_allows_missing_credentials() -> None:
    settings = load_settings(None, env={"RECONCILER_QUOTA": "10"}, require=False)
    assert settings.opencti.url is None
    assert settings.microsoft_defender_intel.client_secret is None
    assert settings.reconciler.quota == 10
    assert settings.secrets() == []


def test_require_false_still_validates_values() -> None:
    with pytest.raises(ConfigError, match=r"reconciler\.quota"):
        load_settings(None, env={"RECONCILER_QUOTA": "0"}, require=False)


def test_settings_are_frozen() -> None:
    settings = load()
    with pytest.raises(ValueError):
        settings.reconciler.quota = 1  # type: ignore[misc]


# -- secrets ----------------------------------------------------------------------------------


def test_redacted_masks_secrets() -> None:
    data = load().redacted()
    assert data["opencti"]["token"] == "********"
    assert data["microsoft_defender_intel"]["client_secret"] == "********"
    assert TOKEN not in repr(data) and CLIENT_SECRET not in repr(data)
    assert data["opencti"]["url"] == REQUIRED_ENV["OPENCTI_URL"]


def test_secrets_lists_both() -> None:
    assert sorted(load().secrets()) == sorted([TOKEN, CLIENT_SECRET])
    assert set(SECRET_KEYS) == {"opencti.token", "microsoft_defender_intel.client_secret"}


def test_repr_hides_secrets() -> None:
    assert TOKEN not in repr(load()) and CLIENT_SECRET not in str(load())


# -- errors -----------------------------------------------------------------------------------


def test_bad_config_names_every_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "opencti:\n  token: [not, a, string]\n"
        "reconciler:\n  quota: 20000\n  ignore_fields: [title, action]\n",
    )
    env = {
        "OPENCTI_URL": "",
        "MICROSOFT_DEFENDER_INTEL_ACTION": "Blok",
        "MICROSOFT_DEFENDER_INTEL_EXPIRE_TIME": "-1",
        "MICROSOFT_DEFENDER_INTEL_EDUCATE_URL": "ftp://x",
        "RECONCILER_MAX_DELETE_RATIO": "1.5",
        "RECONCILER_LOG_FORMAT": "xml",
        "CONNECTOR_LOG_LEVEL": CLIENT_SECRET,  # a secret pasted into the wrong variable
        "OPENCTI_TOKEN": "",
    }
    with pytest.raises(ConfigError) as info:
        load(env, path)
    message = str(info.value)
    lines = message.splitlines()
    assert lines[0] == "invalid configuration (10 problems):"
    assert lines[1:] == [
        "  opencti.url (OPENCTI_URL): required, not set",
        "  opencti.token (OPENCTI_TOKEN, from file config.yml): the value is not a string",
        "  connector.log_level (CONNECTOR_LOG_LEVEL, from env): '********' is not one of "
        "debug, info, warn, warning, error",
        "  microsoft_defender_intel.expire_time (MICROSOFT_DEFENDER_INTEL_EXPIRE_TIME, from env):"
        " '-1' is not a whole number of days >= 0",
        "  microsoft_defender_intel.action (MICROSOFT_DEFENDER_INTEL_ACTION, from env): 'Blok' is"
        " not one of Warn, Block, Audit, Alert, AlertAndBlock, BlockAndRemediate, Allowed",
        "  microsoft_defender_intel.educate_url (MICROSOFT_DEFENDER_INTEL_EDUCATE_URL, from env):"
        " 'ftp://x' is not an http(s) URL",
        "  reconciler.max_delete_ratio (RECONCILER_MAX_DELETE_RATIO, from env): '1.5' is not a"
        " number from 0 to 1",
        "  reconciler.quota (RECONCILER_QUOTA, from file config.yml): 20000 is not a whole number"
        " from 1 to 15000",
        "  reconciler.ignore_fields (RECONCILER_IGNORE_FIELDS, from file config.yml): 'action' is"
        " not one of severity, title, description, expirationTime, generateAlert,"
        " rbacGroupNames, recommendedActions, educateUrl, externalId",
        "  reconciler.log_format (RECONCILER_LOG_FORMAT, from env): 'xml' is not one of auto,"
        " text, json",
    ]
    assert CLIENT_SECRET not in message and TOKEN not in message


def test_single_problem_message() -> None:
    with pytest.raises(ConfigError) as info:
        load({"MICROSOFT_DEFENDER_INTEL_ACTION": "Blok"})
    assert str(info.value) == (
        "invalid configuration (1 problem):\n"
        "  microsoft_defender_intel.action (MICROSOFT_DEFENDER_INTEL_ACTION, from env): 'Blok' "
        "is not one of Warn, Block, Audit, Alert, AlertAndBlock, BlockAndRemediate, Allowed"
    )


def test_missing_required_lists_all() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, env={})
    message = str(info.value)
    assert message.startswith("invalid configuration (7 problems):")
    for key in REQUIRED_KEYS:
        assert f"  {key} ({ENV_VARS[key]}): required, not set" in message


def test_unknown_yaml_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "microsoft_defender_intel:\n  expire_tme: 10\n")
    with pytest.raises(ConfigError) as info:
        load(path=path)
    assert (
        "  microsoft_defender_intel.expire_tme (from file config.yml): unknown key; "
        "did you mean expire_time?"
    ) in str(info.value)


def test_unknown_section_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "reconcilr:\n  dry_run: true\n")
    with pytest.raises(ConfigError, match=r"reconcilr .*unknown section; did you mean reconciler"):
        load(path=path)


def test_unknown_override_key() -> None:
    with pytest.raises(ConfigError, match=r"reconciler\.dryrun \(override\): unknown key"):
        load(overrides={"reconciler.dryrun": True})


def test_section_must_be_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "reconciler: 5\n")
    with pytest.raises(ConfigError, match=r"reconciler .*must be a mapping"):
        load(path=path)


def test_file_must_be_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping of sections"):
        load(path=path)


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    secret_line = f'  token: "{TOKEN}\n'  # unterminated quote: the error is on this line
    path = write(tmp_path, "opencti:\n  url: http://x\n" + secret_line, "broken.yml")
    with pytest.raises(ConfigError) as info:
        load(path=path)
    message = str(info.value)
    assert "broken.yml" in message
    assert "line " in message
    assert TOKEN not in message


def test_yaml_bad_indentation_reports_line(tmp_path: Path) -> None:
    path = write(tmp_path, "opencti:\n  url: http://x\n token: y\n")
    with pytest.raises(ConfigError, match=r"config\.yml: line 3, column 2"):
        load(path=path)


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file .*nope.yml"):
        load(path=tmp_path / "nope.yml")


def test_ca_bundle_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"ca_bundle .*is not an existing file"):
        load({"MICROSOFT_DEFENDER_INTEL_CA_BUNDLE": str(tmp_path / "none.pem")})


def test_url_trailing_slash_is_stripped() -> None:
    settings = load({"MICROSOFT_DEFENDER_INTEL_BASE_URL": "https://api.example/"})
    assert settings.microsoft_defender_intel.base_url == "https://api.example"


@pytest.mark.parametrize(
    ("env_var", "raw"),
    [
        ("OPENCTI_URL", "opencti.local"),
        ("MICROSOFT_DEFENDER_INTEL_RESOURCE_PATH", "api/indicators"),
        ("RECONCILER_INTERVAL_SECONDS", "9"),
        ("RECONCILER_INTERVAL_SECONDS", "1.5"),
        ("RECONCILER_HTTP_PORT", "65536"),
        ("RECONCILER_QUOTA", "0"),
        ("MICROSOFT_DEFENDER_INTEL_EXPIRE_TIME", "thirty"),
    ],
)
def test_out_of_range_values(env_var: str, raw: str) -> None:
    key = next(k for k, v in ENV_VARS.items() if v == env_var)
    with pytest.raises(ConfigError, match=f"{key} \\({env_var}, from env\\)"):
        load({env_var: raw})


def test_ownership_tag_cannot_be_blank() -> None:
    with pytest.raises(ConfigError, match=r"ownership_tag .*from override.*empty"):
        load(overrides={"microsoft_defender_intel.ownership_tag": "  "})


def test_boolean_in_yaml_is_not_a_number(tmp_path: Path) -> None:
    path = write(tmp_path, "reconciler:\n  max_deletes: true\n")
    with pytest.raises(ConfigError, match=r"max_deletes .*True is not a whole number"):
        load(path=path)


# -- the example file -------------------------------------------------------------------------


def test_example_file_loads() -> None:
    settings = load_settings(EXAMPLE, env={})
    assert settings.opencti.token is not None
    assert settings.reconciler.interval_seconds == 300


def test_example_file_documents_every_key() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    document = yaml.safe_load(text)
    for dotted, env_var in ENV_VARS.items():
        section, key = dotted.split(".")
        assert key in document[section], f"{dotted} missing from config.example.yml"
        assert env_var in text, f"{env_var} not mentioned in config.example.yml"


def test_example_file_defaults_match_model() -> None:
    settings = load_settings(EXAMPLE, env={})
    for key, expected in SEED_DEFAULTS.items():
        if key != "connector.name":
            assert settings.get(key) == expected, key
