"""OpenCTI indicator → Defender indicator specs: reading both OpenCTI renderings (a GraphQL
listing node, a stream event's STIX object) into one model, finding the deployable values
(``observable_values`` or a small STIX pattern parser), canonicalising and validating them,
score → action/severity, expiry, title/description/labels, and the deterministic merge of
several OpenCTI indicators that land on one Defender key.

Pure functions only: no I/O, no clock, no logging of data, never imports httpx, pycti or msal.
The readers and mappers are total: bad input becomes a ``Skipped`` with a stable reason, never
an exception (only ``parse_stix_pattern`` raises, its own ``PatternRejected``, and
``MappingPolicy`` refuses a negative expiry with ``ValueError``).

Modules (one job each; this package re-exports their public names):

- ``models``: the normalised indicator, its observable values, mapping results, desired state;
- ``policy``: ``MappingPolicy``, the configuration mapping needs, and ``Retire`` (what
  revocation and expiry do);
- ``rules``: the policy rules (``Rule``, ``RuleMatch``), compiled once into a ``RuleBook``
  that picks the rule of each value (first match wins, the default rule last);
- ``exclusions``: ``Exclusion`` and ``ExclusionSet``, the values never deployed;
- ``readers``: the tolerant readers of a GraphQL listing node and of a stream event's STIX
  object;
- ``pattern``: the STIX pattern parser;
- ``values``: canonicalisation and validation of IPs, domains, URLs and file hashes;
- ``fields``: score → action/severity, expiry, title, description and its labels line;
- ``desired``: ``map_indicator`` (the policy's order of decisions is in its docstring) and the
  deterministic merge per Defender key;
- ``explain``: why one value maps as it does (``plan --explain``): its keys, each contributing
  indicator's rule trace.

Every module is pure; none imports an I/O library or an adapter package.

Decisions (each is a contract the tests pin):

- IPv6 values are written in the full exploded form with all eight groups
  (``ipaddress.IPv6Address(v).exploded``), as the Defender reference asks for "all eight groups".
- IPv4 values are the canonical dotted quad; leading zeros are rejected (``invalid_value``).
- A CIDR ``/32`` (IPv4) or ``/128`` (IPv6) is one host and is deployed as that address; every
  other prefix is ``unsupported_type`` ("CIDR ranges are not supported by Defender").
- Non-public addresses (RFC 1918, CGNAT, loopback, link-local, multicast, unspecified,
  reserved, unique-local, ...) are ``private_ip`` when ``reject_private_ips``. The documentation
  ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) are deliberately *not*
  rejected: examples and the sandbox use them, and Defender's own answer is unconfirmed.
- A file yields one Defender indicator: its strongest *valid* hash (SHA-256 > SHA-1 > MD5);
  only when no hash is valid is it ``invalid_value``; SHA-512-only is ``unsupported_type``.
- A network type (IpAddress, DomainName, Url) cannot take ``BlockAndRemediate``: a fixed
  ``BlockAndRemediate`` action is downgraded to ``Block`` for those types.
- ``passive_only`` makes the default rule's action ``Audit`` (a rule with its own action is
  not affected); ``Audit`` always sends ``generateAlert: true``.
- Policy rules: the first rule whose conditions hold decides a value; what it leaves unset comes
  from the default rule (the seed's keys). Exclusions and the opt-out label win over every rule.
- ``title`` is cut to ``TITLE_LIMIT`` (200) characters and ``description`` to
  ``DESCRIPTION_LIMIT`` (1000); the description's last line ``Labels: opencti, ...`` is kept
  whole when the text has to be cut.
- ``expirationTime`` = the earlier of ``valid_until`` and ``updated_at`` (else ``created_at``) +
  ``expire_days`` days (0 = no cap); never derived from the current time. Only
  ``map_indicator(..., now=...)`` compares it with a clock value the caller passes.
- Domains: stripped, lower-cased, one trailing dot removed, IDN → punycode (``idna`` UTS46,
  falling back to Python's codec); a fully qualified name (at least one dot) is required.
- URLs are only stripped; they must be ``http(s)://...`` or ``host/path`` and hold no
  whitespace or control characters.
"""

from reconciler.mapping.desired import build_desired, map_indicator, merge_desired, merge_results
from reconciler.mapping.exclusions import Exclusion, ExclusionHit, ExclusionSet
from reconciler.mapping.explain import IndicatorTrace, ValueTrace, keys_for, trace_indicator
from reconciler.mapping.fields import (
    DESCRIPTION_LIMIT,
    LABELS_PREFIX_TAG,
    TITLE_LIMIT,
    expiration_time,
    expires_after,
    labels_line,
    score_action,
    score_severity,
)
from reconciler.mapping.models import DesiredState, MappingResult, ObservableValue, OpenCTIIndicator
from reconciler.mapping.pattern import PatternError, PatternRejected, parse_stix_pattern
from reconciler.mapping.policy import MappingPolicy, Retire
from reconciler.mapping.readers import OCTI_EXTENSION, indicator_from_graphql, indicator_from_stix
from reconciler.mapping.rules import (
    BY_SCORE,
    DEFAULT_RULE,
    Outcome,
    Rule,
    RuleBook,
    RuleMatch,
    RuleTrace,
    rule_type_names,
)
from reconciler.mapping.values import canonical_value

__all__ = [
    "BY_SCORE",
    "DEFAULT_RULE",
    "DESCRIPTION_LIMIT",
    "LABELS_PREFIX_TAG",
    "OCTI_EXTENSION",
    "TITLE_LIMIT",
    "DesiredState",
    "Exclusion",
    "ExclusionHit",
    "ExclusionSet",
    "IndicatorTrace",
    "MappingPolicy",
    "MappingResult",
    "ObservableValue",
    "OpenCTIIndicator",
    "Outcome",
    "PatternError",
    "PatternRejected",
    "Retire",
    "Rule",
    "RuleBook",
    "RuleMatch",
    "RuleTrace",
    "ValueTrace",
    "build_desired",
    "canonical_value",
    "expiration_time",
    "expires_after",
    "indicator_from_graphql",
    "indicator_from_stix",
    "keys_for",
    "labels_line",
    "map_indicator",
    "merge_desired",
    "merge_results",
    "parse_stix_pattern",
    "rule_type_names",
    "score_action",
    "score_severity",
    "trace_indicator",
]
