"""Microsoft Defender for Endpoint emulator: the Indicators API plus the Entra login MSAL needs.

Owns: one threaded HTTP(S) server on 127.0.0.1 serving the Entra endpoints of a confidential
client (openid-configuration, instance discovery, v2.0 and v1 token) and the Defender Indicators
API (list with OData, submit, import, delete, BatchDelete), and, with ``graph=True``, Microsoft
Graph's security alerts (``GET /v1.0/security/alerts_v2``) with alerts raised by test hooks
(``raise_hit``, ``POST /_test/hits``); an in-memory indicator store with upsert, expiry, a quota,
per-endpoint rate limits, seeded fault injection and a request log. The spec is Microsoft's public
documentation of the Indicators API, of Graph's alerts_v2 and of Entra ID's client-credentials
grant, plus behaviour observed in real tenants.

Modules: ``emulator`` (the ``DefenderEmulator`` facade: knobs, lifecycle, state helpers, hit
hooks), ``routing`` (routes and the order of work on a request, the request log), ``login``
(Entra endpoints, ``AadError``, tokens), ``api`` (authorization and the Indicators API handlers),
``graph`` (Graph's errors, token check, alerts_v2 query options, the HTTP hit hook), ``alerts``
(alert objects and their evidence),
``store`` (rows, ids, upsert, expiry), ``odata`` (``$filter``), ``validation`` (indicator
bodies), ``forms`` (equivalent forms, the deny list), ``lifecycle`` (deprecation, retirement, the
URL limit), ``limits`` (rate limits, fault injection), ``server`` (HTTP(S) server, TLS material),
``core`` (errors, times, the request record), ``cli`` (``describe``, ``serve_forever``, ``main``).

Must not: import anything from the rest of ``reconciler`` (so the emulator cannot share the
client's mistakes), reach any network beyond loopback, or sleep except for a configured latency.

Choices where Microsoft documents nothing (not established by the documentation), made on purpose.
Each variant is a constructor keyword, a plain attribute changeable while running and a flag of
``reconciler sandbox defender``; the default comes first:

- Upsert key (``upsert_key``, ``--upsert-key``): (indicatorType, indicatorValue, action)
  (``type-value-action``) or (indicatorType, indicatorValue) (``type-value``: another action
  updates the row in place, same id); exact string match unless ``echo="equivalent"``. When the
  key changes while rows exist, the oldest row keeps a key two rows share.
- Import rejection (``batch_rejection``, ``--batch-rejection``): ``per_item`` (a refused item
  fails in the answer, the others land) or ``whole_batch`` (the first refused item fails the
  call with its status, 400 for any invalid item, naming its value; nothing of the call is
  stored; ids handed out meanwhile are not reused).
- Deny list (``deny_values``, ``--deny-values``; default microsoft.com, windowsupdate.com,
  login.microsoftonline.com): a value equal to an entry (case-insensitive, any type; a Url by its
  value or host) -> 400 ``InvalidInput`` naming it on submit; on import as the mode above says.
- Echo (``echo``, ``--echo``): ``as_sent`` or ``equivalent`` (stored, answered and listed as
  upper-case file hashes and domain names, compressed IPv6, ``Alert`` -> ``Audit``,
  ``AlertAndBlock`` -> ``Block`` (network types) / ``BlockAndRemediate`` (files); the upsert key
  compares these forms case-insensitively; ``$filter`` eq/ne on indicatorValue ignores case).
- OData (``odata``, ``--odata``): ``lenient`` or ``strict`` (``or`` -> 400 ``ODataError``; more
  than ``odata_node_limit`` (100) parse-tree nodes -> 400 ``ODataError``; a request target, path
  and query as received, longer than ``url_limit`` (2048) -> 414 on any endpoint, before faults).
- Lifecycle: ``deprecation`` (``--deprecation``; off) adds to every API answer (not login)
  ``Deprecation: @1768435200`` (2026-01-15, RFC 9745), a ``Link`` with ``rel="deprecation"`` and,
  while ``sunset`` (``--sunset``; 2027-02-01, None/'' for none) is set, ``Sunset`` (RFC 8594
  HTTP-date). ``retired`` (``--retired``; off): every API call answers 410 ``Gone``.
- Tokens (``token_format``, ``--token-format``): ``jwt`` (base64url header.payload.signature
  with aud, iss, tid, appid/azp, iat, nbf, exp and the ``roles`` at issue time; HMAC-signed with
  a random key, never verified: looked up by the whole string) or ``opaque`` ("emu." + random).
- ``strict=True`` / ``make_strict()`` / ``--all-strict``: type+value key, whole-batch
  rejection, equivalent echo, strict OData and deprecation headers at once (``STRICT_PRESET``).
- An update replaces every mutable field with what was sent (omitted optional fields return to
  their defaults); ``application``, ``version``, ``certificateInfo`` and the creation fields keep
  their first values.
- Creating past the quota -> 400 ``IndicatorsLimitExceeded`` (an import item: ``isFailed``).
- Private, loopback, link-local, CGNAT and multicast IPs -> 400 ``InvalidIpAddress`` while
  ``public_ips_only`` (documentation ranges such as 203.0.113.0/24 are accepted).
- Past ``expirationTime``, Audit without ``generateAlert``, an action not allowed for the type
 , ``educateUrl`` outside Url + Block/Warn -> 400 ``InvalidInput``. The legacy actions are
  accepted: ``Alert`` for every type but certificates, ``AlertAndBlock`` for file hashes.
- Import: a failed item gets ``id: null`` and ``failureReason`` ``"<Code>: <message>"``.
- BatchDelete with an unknown id -> 404; nothing is deleted while ``batch_delete_atomic`` (on;
  ``--batch-delete-non-atomic`` turns it off: the known ids are deleted all the same).
- List: without ``$top`` pages of ``page_size`` (10,000) with ``@odata.nextLink``; with ``$top``
  no nextLink; ``$orderby``/``$select``/``$count``/``$expand`` -> 400 ``ODataError``. String
  comparisons are case-sensitive; ``eq`` on rbacGroupNames/rbacGroupIds means "has the element".
- Rate limits count per endpoint for the whole tenant; a refused call spends no budget.
- Roles (``roles=``, captured in each token when issued): none of Ti.ReadWrite(.All) -> 403
  ``Forbidden`` (Ti.Read.All may list); Ti.ReadWrite alone lists only the app's own indicators
  and gets 403 when it updates or deletes another's. A token for the newer API host
  (``https://api.security.microsoft.com/.default``) is issued but refused by the API with 403.
- Microsoft Graph (``graph``, ``--graph``; off, so the Graph scope is then refused at login with
  ``invalid_scope`` as before). On: scope ``https://graph.microsoft.com/.default`` (v1 resource
  ``https://graph.microsoft.com``) issues a token from the same app registration with the roles
  ``graph_roles`` (SecurityAlert.Read.All); the Indicators API refuses it (403, audience), Graph
  refuses a Defender token (401 ``InvalidAuthenticationToken``, "Invalid audience.") and a token
  without SecurityAlert.Read(Write).All (403 ``Forbidden``). Errors carry Graph's ``innerError``.
  Undocumented answers, each a keyword and a flag: ``graph_detection_source_filter``
  (``accepted`` | ``refused``: detectionSource in ``$filter`` -> 400 ``BadRequest``);
  ``graph_next_link`` (``present``: the request again with ``$skip`` advanced | ``missing``);
  ``graph_default_top`` and ``graph_max_top`` (2,000 each) with ``graph_top_over_max`` (``cap``
  silently | ``error`` 400); ``graph_max_skip`` (None; above it 400); ``graph_orderby``
  (``refused`` 400 | ``accepted``); ``graph_rate_limit_per_minute`` (None; else 429 with
  Retry-After on the emulator's clock, apart from ``rate_limits``). Random faults reach Graph
  only when ``set_faults(endpoints=...)`` names ``alerts``; forced statuses work as elsewhere.
  Alerts are listed in the order raised; their evidence is described in ``alerts``.
"""

from reconciler.sandbox.defender.alerts import HIT_TYPES
from reconciler.sandbox.defender.api import DEFAULT_PAGE_SIZE
from reconciler.sandbox.defender.cli import describe, emulator_options, main, serve_forever
from reconciler.sandbox.defender.core import (
    API_ENDPOINTS,
    ENDPOINTS,
    GRAPH_ENDPOINTS,
    ApiError,
    EmulatorClock,
    RawIndicator,
    RequestRecord,
    format_timestamp,
    parse_timestamp,
)
from reconciler.sandbox.defender.emulator import BATCH_REJECTIONS, STRICT_PRESET, DefenderEmulator
from reconciler.sandbox.defender.forms import DEFAULT_DENY_VALUES, ECHO_MODES
from reconciler.sandbox.defender.graph import compile_alert_filter
from reconciler.sandbox.defender.lifecycle import DEFAULT_SUNSET, DEPRECATED_AT
from reconciler.sandbox.defender.limits import RATE_LIMITS
from reconciler.sandbox.defender.login import (
    ALERT_READ_ALL,
    ALERT_READ_WRITE_ALL,
    GRAPH_RESOURCE,
    GRAPH_SCOPE,
    OTHER_RESOURCE,
    READ_ALL,
    READ_WRITE,
    READ_WRITE_ALL,
    RESOURCE,
    SCOPE,
    TOKEN_FORMATS,
    AadError,
)
from reconciler.sandbox.defender.odata import FILTER_FIELDS, MAX_TOP, ODATA_MODES, compile_filter
from reconciler.sandbox.defender.store import FIELD_ORDER
from reconciler.sandbox.defender.validation import (
    ACCEPTED_FIELDS,
    ACTIONS,
    ALLOWED_ACTIONS,
    INDICATOR_TYPES,
    MAX_BATCH,
    REQUIRED_FIELDS,
    SEVERITIES,
    validate_indicator,
)

__all__ = [
    "ACCEPTED_FIELDS",
    "ACTIONS",
    "ALERT_READ_ALL",
    "ALERT_READ_WRITE_ALL",
    "ALLOWED_ACTIONS",
    "API_ENDPOINTS",
    "BATCH_REJECTIONS",
    "DEFAULT_DENY_VALUES",
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_SUNSET",
    "DEPRECATED_AT",
    "ECHO_MODES",
    "ENDPOINTS",
    "FIELD_ORDER",
    "FILTER_FIELDS",
    "GRAPH_ENDPOINTS",
    "GRAPH_RESOURCE",
    "GRAPH_SCOPE",
    "HIT_TYPES",
    "INDICATOR_TYPES",
    "MAX_BATCH",
    "MAX_TOP",
    "ODATA_MODES",
    "OTHER_RESOURCE",
    "RATE_LIMITS",
    "READ_ALL",
    "READ_WRITE",
    "READ_WRITE_ALL",
    "REQUIRED_FIELDS",
    "RESOURCE",
    "SCOPE",
    "SEVERITIES",
    "STRICT_PRESET",
    "TOKEN_FORMATS",
    "AadError",
    "ApiError",
    "DefenderEmulator",
    "EmulatorClock",
    "RawIndicator",
    "RequestRecord",
    "compile_alert_filter",
    "compile_filter",
    "describe",
    "emulator_options",
    "format_timestamp",
    "main",
    "parse_timestamp",
    "serve_forever",
    "validate_indicator",
]
