"""The reconciler's configuration: one pydantic model, read from a YAML file and env vars.

Owns: the ``Settings`` model (sections ``opencti``, ``connector``, ``microsoft_defender_intel``,
``reconciler``, ``policy``), the env var name of every key (``ENV_VARS``, the seed connector's
names kept exactly), precedence (CLI overrides > env var > YAML file > default), parsing of env
strings (booleans, comma lists, empty = unset), and one ``ConfigError`` naming every bad key.
Must not: log, open network connections, or put a secret's value in a message.

Why not pydantic-settings: its env names are derived from the model (``OPENCTI__URL`` style)
and its errors do not say which source a value came from; the seed's ``SECTION_KEY`` names and
an error that names file/env per key are the contract here, and a 40-line merge does both.

Modules (one job each; this package re-exports their public names):

- ``values``: the env-string parsers and validators, the annotated types built from them
  (``Flag``, ``Names``, ``Url``, ``NonEmpty``, ``LogLevel``, ``LogFormat``) and ``_setting``,
  which declares a key with its env var, what it accepts and its description;
- ``policy``: the ``policy`` section and the parsers of its rules and exclusions (YAML lists,
  JSON arrays in env vars), with errors that name the rule or exclusion;
- ``sections``: the other section models, ``Settings``, ``ENV_VARS``, ``REQUIRED_KEYS``,
  ``SECRET_KEYS``, ``settings_reference`` and the pycti keys accepted and ignored;
- ``loading``: ``load_settings``, which reads the file and the env vars, applies precedence and
  words the ``ConfigError``.

Each module imports only the ones listed before it.
"""

from reconciler.config.loading import DEFAULT_CONFIG_FILE, load_settings
from reconciler.config.policy import PolicySection
from reconciler.config.sections import (
    ENV_VARS,
    MASK,
    REQUIRED_KEYS,
    SECRET_KEYS,
    ConnectorSection,
    DefenderSection,
    OpenCTISection,
    ReconcilerSection,
    Settings,
    settings_reference,
)
from reconciler.config.values import Flag, LogFormat, LogLevel, Names, NonEmpty, Url
from reconciler.model import IGNORABLE_FIELDS

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "ENV_VARS",
    "IGNORABLE_FIELDS",
    "MASK",
    "REQUIRED_KEYS",
    "SECRET_KEYS",
    "ConnectorSection",
    "DefenderSection",
    "Flag",
    "LogFormat",
    "LogLevel",
    "Names",
    "NonEmpty",
    "OpenCTISection",
    "PolicySection",
    "ReconcilerSection",
    "Settings",
    "Url",
    "load_settings",
    "settings_reference",
]
