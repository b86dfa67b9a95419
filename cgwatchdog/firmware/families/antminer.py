"""Antminer with Bitmain's stock firmware (bmminer or cgminer; S9 ... S19, S21).

Recognised
    VERSION (or the STATS identity entry) names the machine ``Type: Antminer ...``
    (``Antminer S9``, ``Antminer S19j Pro``), or bmminer answers with Bitmain's VERSION
    keys (``Miner``, ``CompileTime``) and no other firmware's mark. Not this family:
    LuxOS (its VERSION copies Bitmain's keys but adds ``LUXminer``), Braiins OS
    (``BOSminer``), VNish (``vnish`` anywhere in the identity; its own family wins
    with 50+ anyway), Hiveon (``hiveon``), MARA (``kaonsu``) and MSKminer: the field
    capture ``mskminer-s19-2.6.0.39`` reports ``BMMiner 4.11.1 rwglr`` and ``Type:
    S19-88 v.2.6.0.39``: no ``Antminer`` type, the ``rwglr`` build tag pyasic uses to
    tell MSKminer (``pyasic/miners/factory.py`` ``_parse_socket_type``), and a web API
    of its own (form login at ``/admin/login``, ``/api/<cmd>``, user ``admin``:
    ``pyasic/web/mskminer.py``), so Bitmain's CGIs and Digest login would not work
    there. Score 20 (a vendor's stock firmware); 10 for a bmminer with Bitmain's keys
    but no ``Antminer`` type. Polled: ``summary``, ``devs``, ``pools`` and ``stats``
    (boards, fans and temperatures are only in STATS).

Control: the web UI's CGI scripts, HTTP on port 80 (``control_port``), HTTP Digest
(realm ``antMiner Configuration``), user ``root``, factory password ``root``. The
cgminer API is never written to: stock firmware ships ``api-allow: A:0/0,W:*``, which
refuses every privileged command with Code 45 (pyasic issues #35, #44).

``reboot``
    ``GET /cgi-bin/reboot.cgi``. The firmware stops the miner and reboots
    (``/etc/init.d/cgminer.sh stop; reboot`` in a public S17 firmware extract), so the
    answer is often a dropped connection: ``Unconfirmed``, and the planner verifies
    the miner's return with ``Elapsed`` reset.
``switchpool``
    The pool order is the priority; there is no "switch to pool N" call. ``GET
    /cgi-bin/get_miner_conf.cgi``, the target pool (matched to the saved list by URL
    and user) moved first and the others kept in their order, ``POST
    /cgi-bin/set_miner_conf.cgi``, which saves the configuration and restarts the
    mining process with it. Verified by the active pool changing.
``restart``
    Stock firmware has no "restart the mining process" call. The configuration as read
    is posted back unchanged, which restarts bmminer: *inferred* for modern firmware
    from asic-rs ("set_miner_conf.cgi writes the config before starting a miner
    reload/restart"), and seen in the S17 extract's ``set_miner_conf.cgi``, which runs
    ``cgminer.sh restart`` before it answers ``ok``. Verified by ``Elapsed`` reset.
``sleep`` / ``wake``
    ``set_miner_conf.cgi`` with ``miner-mode`` 1 / 0 and the rest as read (pyasic's
    ``AntminerModern.stop_mining``/``resume_mining``). Only the JSON dialect below: for
    the S9/S17-era form no source gives a faithful sleep value (pyasic sends no mode
    there), so such a miner answers ``NotSupported`` once its dialect is known.
``disable`` / ``enable``
    Not supported: stock firmware has no per-board control (neither pyasic nor asic-rs
    has one).

Two dialects of ``set_miner_conf.cgi``, chosen from what ``get_miner_conf.cgi`` returns:

- JSON (S19-era UI, pyasic ``AntminerModern``): the body the web UI sends,
  ``{"bitmain-fan-ctrl", "bitmain-fan-pwm", "freq-level", "miner-mode", "pools": [3 x
  {url, user, pass}]}``, each value as read. The read side reports the mode as
  ``bitmain-work-mode`` and the frequency level as ``bitmain-freq-level``; the set side
  expects ``miner-mode`` and ``freq-level`` (pyasic ``config/mining`` and
  ``config/__init__.py``; foreman's ``StockChangePoolsAction`` maps them the same way).
  Success: ``{"stats": "success", "code": "M000"}`` (asic-rs, pyasic).
- Form (S9/S17-era UI, pyasic ``AntminerOld``): ``_ant_pool1url``, ``_ant_pool1user``,
  ``_ant_pool1pw`` ... ``_ant_pool3pw``, then ``_ant_nobeeper``,
  ``_ant_notempoverctrl``, ``_ant_fan_customize_switch``,
  ``_ant_fan_customize_value``, ``_ant_freq``, ``_ant_voltage`` and, where the
  configuration has a work mode (S17), ``_ant_work_mode``, each from the matching
  ``bitmain-*`` key as read. The firmware's shell script reads the fields *by
  position*, so this order is kept exactly (the S17 extract's ``set_miner_conf.cgi``;
  foreman's ``AntminerConfValue``; an S9/T9 tool adds ``_ant_voltage``). It answers
  ``ok``, only after the restart (the S17 script sleeps 30 s first): with a shorter
  ``timeout`` the step is ``Unconfirmed`` and verification decides.

The choice: a configuration with ``miner-mode`` is JSON; one without
``bitmain-work-mode`` is the form (the S9 writes no work mode; foreman's rule); with
``bitmain-work-mode`` it is JSON unless ``get_system_info.cgi`` names an S17/T17, which
pyasic drives through the form (``BMMinerS17(AntminerOld)``). The form is also the safe
side of a wrong guess: a JSON body posted to the positional script would be saved as
garbage pool fields, a form body posted to the JSON CGI is refused.

A 401 after the Digest exchange is ``AuthFailed`` ("set credentials.password_file for
<miner>"); the password is never shown. Sources: pyasic ``pyasic/web/antminer.py``
(Digest, ``/cgi-bin/<cmd>.cgi``, JSON vs form posts), ``pyasic/miners/backends/
antminer.py``, ``pyasic/config/{pools,fans,mining/__init__}.py``; asic-rs
``asic-rs-firmwares/antminer/src/backends/v2020/mod.rs`` (``miner-mode`` /
``bitmain-work-mode``, the restart comment) and ``v2023_07/web.rs`` (30 s
``set_miner_conf`` timeout); foreman-apps ``foreman-antminer`` (realm, dialect rule,
``: ,`` repair of a broken ``get_miner_conf`` reply);
kde2podfreebsd/Bitmain-Antminer-S17-Reverse-Firmware ``www/pages/cgi-bin/
{set_miner_conf,reboot}.cgi``.

Unverified against hardware: the body of ``reboot.cgi`` (none of the sources shows
one); the S21-era firmware's set side; whether every S17/T17 firmware still uses the
form; that a re-post restarts bmminer on S19-era firmware (inferred, see above).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

from cgwatchdog.errors import (
    ActionError,
    AuthFailed,
    NotSent,
    NotSupported,
    Unconfirmed,
)
from cgwatchdog.firmware.base import (
    BASE_COMMANDS,
    ActionRequest,
    Channel,
    ChannelTarget,
    Family,
    Identity,
    firmware_family,
)
from cgwatchdog.snapshot import Pool, Snapshot

if TYPE_CHECKING:
    import requests

__all__ = [
    "FORM_FIELDS",
    "Antminer",
    "AntminerChannel",
    "Dialect",
    "config_dialect",
    "form_body",
    "json_body",
    "saved_pools",
]

Dialect = Literal["json", "form"]

GET_CONF: Final = "/cgi-bin/get_miner_conf.cgi"
SET_CONF: Final = "/cgi-bin/set_miner_conf.cgi"
REBOOT: Final = "/cgi-bin/reboot.cgi"
SYSTEM_INFO: Final = "/cgi-bin/get_system_info.cgi"
POOL_SLOTS: Final = 3
"""The web UI keeps exactly three pools (pyasic pads to three)."""
MODE_NORMAL: Final = 0
MODE_SLEEP: Final = 1

# Other firmware on Antminer hardware, by the mark it leaves in the API's answers.
_NOT_STOCK: Final = ("luxminer", "bosminer", "braiins", "vnish", "hiveon", "kaonsu", "rwglr")
# S17/T17 report bitmain-work-mode but keep the old positional form (pyasic AntminerOld).
_FORM_WITH_WORK_MODE: Final = re.compile(r"\b[st]17", re.IGNORECASE)
# The form fields after the pools, in the position order the firmware's script reads
# them, and the get_miner_conf.cgi key each one comes from.
FORM_FIELDS: Final[tuple[tuple[str, str], ...]] = (
    ("_ant_nobeeper", "bitmain-nobeeper"),
    ("_ant_notempoverctrl", "bitmain-notempoverctrl"),
    ("_ant_fan_customize_switch", "bitmain-fan-ctrl"),
    ("_ant_fan_customize_value", "bitmain-fan-pwm"),
    ("_ant_freq", "bitmain-freq"),
    ("_ant_voltage", "bitmain-voltage"),
)
_FLAGS: Final = frozenset({"bitmain-nobeeper", "bitmain-notempoverctrl", "bitmain-fan-ctrl"})
_ERRNO: Final = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")

PoolEntry = tuple[str, str, str]
"""One saved pool: (url, user, pass)."""


@firmware_family
class Antminer(Family):
    """Antminer with Bitmain's stock firmware."""

    name = "antminer"
    title = "Antminer (stock Bitmain firmware)"
    channel_title = "the web UI's CGI scripts (HTTP, port 80)"
    auth_title = 'HTTP Digest (realm "antMiner Configuration"), root/root by default'
    control_port = 80
    default_user = "root"
    default_password = "root"
    restart_window_s = 180.0
    reboot_window_s = 600.0
    unsupported: ClassVar[Mapping[str, str]] = {
        "disable": "stock firmware has no per-board control",
        "enable": "stock firmware has no per-board control",
    }
    verification = (
        "restart/reboot: Elapsed reset and the condition cleared; switchpool: the active "
        "pool changed; sleep: hashrate near 0; wake: hashing again"
    )

    def recognise(self, identity: Identity) -> int:
        text = identity.text()
        if any(mark in text for mark in _NOT_STOCK):
            return 0
        if any(str(key).lower() == "luxminer" for key in identity.version):
            return 0
        kind = _type_of(identity)
        if kind is not None and kind.lower().startswith("antminer"):
            return 20
        fork = (identity.fork or "").lower()
        if fork.startswith("bmminer") and {"Miner", "CompileTime"} <= set(identity.version):
            return 10
        return 0

    def firmware_version(self, identity: Identity) -> str | None:
        compiled = identity.version.get("CompileTime") or identity.stats.get("CompileTime")
        if isinstance(compiled, str) and compiled.strip():
            return compiled.strip()
        return identity.fork

    def poll_commands(self, snapshot: Snapshot, without_stats: Snapshot | None) -> tuple[str, ...]:
        return (*BASE_COMMANDS, "stats")

    def channel(self, target: ChannelTarget) -> Channel:
        return AntminerChannel(self, target)


def _type_of(identity: Identity) -> str | None:
    for entry in (identity.version, identity.stats):
        value = entry.get("Type")
        if isinstance(value, str) and value.strip():
            return value.strip()
    return identity.model


class AntminerChannel(Channel):
    """The web UI's CGIs with Digest login; each call opens its own HTTP session."""

    async def perform(self, request: ActionRequest) -> str:
        do = request.do
        if do == "reboot":
            return await asyncio.to_thread(self._reboot)
        if do == "restart":
            return await asyncio.to_thread(self._restart)
        if do == "switchpool":
            return await asyncio.to_thread(self._switchpool, request)
        if do in ("sleep", "wake"):
            return await asyncio.to_thread(self._set_mode, do)
        raise self.not_supported(request)

    async def check_access(self) -> str:
        return await asyncio.to_thread(self._check_access)

    # -- the actions (blocking; run in a thread) ----------------------------------------

    def _check_access(self) -> str:
        with _Web(self.target) as web:
            web.get_conf()
        return f"get_miner_conf.cgi: login as {self.target.user} accepted"

    def _reboot(self) -> str:
        with _Web(self.target) as web:
            response = web.call("GET", REBOOT, dropped_means="the miner reboots")
        return f"reboot.cgi accepted (HTTP {response.status_code}): the miner reboots"

    def _restart(self) -> str:
        with _Web(self.target) as web:
            conf = web.get_conf()
            dialect = web.dialect(conf)
            pools = saved_pools(conf)
            web.set_conf(dialect, conf, pools, mode=None)
        return (
            f"set_miner_conf.cgi: configuration posted back unchanged ({dialect} dialect); "
            "bmminer restarts"
        )

    def _switchpool(self, request: ActionRequest) -> str:
        if request.pool is None:
            raise ActionError("switchpool needs the pool to switch to")
        with _Web(self.target) as web:
            conf = web.get_conf()
            pools = saved_pools(conf)
            index = _pool_index(pools, request.pool, request.pools)
            if index is None:
                raise ActionError(
                    f"{self.target.name}: pool {request.pool} is not among the pools "
                    "get_miner_conf.cgi returned; nothing changed"
                )
            reordered = [pools[index], *pools[:index], *pools[index + 1 :]]
            dialect = web.dialect(conf)
            web.set_conf(dialect, conf, reordered, mode=None)
        saved = sum(1 for url, _user, _pw in pools if url)
        return (
            f"set_miner_conf.cgi: pool {pools[index][0]} moved first of {saved} "
            f"({dialect} dialect); bmminer restarts with it"
        )

    def _set_mode(self, do: str) -> str:
        mode = MODE_SLEEP if do == "sleep" else MODE_NORMAL
        with _Web(self.target) as web:
            conf = web.get_conf()
            dialect = web.dialect(conf)
            if dialect == "form":
                raise NotSupported(
                    f"not supported by antminer: {do} on {self.target.name}: its web UI "
                    "takes the S9/S17-era form, which has no documented sleep mode"
                )
            web.set_conf(dialect, conf, saved_pools(conf), mode=mode)
        return f"set_miner_conf.cgi: miner-mode {mode} ({do}); bmminer restarts"


def _pool_index(pools: Sequence[PoolEntry], pool_id: int, polled: Sequence[Pool]) -> int | None:
    """Where the polled pool ``pool_id`` sits in the saved list: by URL and user, then
    by URL; without a polled list, the cgminer id is the saved position."""
    target = next((p for p in polled if p.id == pool_id), None)
    if target is None:
        ok = 0 <= pool_id < len(pools) and bool(pools[pool_id][0])
        return pool_id if ok else None
    for with_user in (True, False):
        for index, (url, user, _pw) in enumerate(pools):
            if url and url == target.url and (user == target.user or not with_user):
                return index
    return None


# -- the dialects (pure) ----------------------------------------------------------------


def saved_pools(conf: Mapping[str, Any]) -> list[PoolEntry]:
    """The pools of a get_miner_conf.cgi reply as (url, user, pass), in saved order."""
    out: list[PoolEntry] = []
    raw = conf.get("pools")
    if isinstance(raw, list):
        for item in raw:
            if isinstance(item, Mapping):
                out.append(
                    (_text(item.get("url")), _text(item.get("user")), _text(item.get("pass")))
                )
    return out


def config_dialect(conf: Mapping[str, Any], model: str | None) -> Dialect:
    """Which set_miner_conf.cgi body this miner takes (see the module docstring)."""
    if "miner-mode" in conf:
        return "json"
    if "bitmain-work-mode" not in conf:
        return "form"
    if model is not None and _FORM_WITH_WORK_MODE.search(model):
        return "form"
    return "json"


def _padded(pools: Sequence[PoolEntry]) -> list[PoolEntry]:
    return [*pools[:POOL_SLOTS], *[("", "", "")] * (POOL_SLOTS - len(pools))]


def json_body(
    conf: Mapping[str, Any], pools: Sequence[PoolEntry], mode: int | None
) -> dict[str, Any]:
    """The S19-era body: what the web UI posts, each value as read; ``mode`` None keeps
    the mode read (``bitmain-work-mode`` on the read side, ``miner-mode`` on the set)."""
    if mode is None:
        mode = _mode(conf.get("miner-mode", conf.get("bitmain-work-mode")))
    level = conf.get("freq-level", conf.get("bitmain-freq-level"))
    return {
        "bitmain-fan-ctrl": _flag(conf.get("bitmain-fan-ctrl")),
        "bitmain-fan-pwm": _text(conf.get("bitmain-fan-pwm")) or "100",
        "freq-level": _text(level) or "100",
        "miner-mode": mode,
        "pools": [{"url": url, "user": user, "pass": pw} for url, user, pw in _padded(pools)],
    }


def form_body(conf: Mapping[str, Any], pools: Sequence[PoolEntry]) -> list[tuple[str, str]]:
    """The S9/S17-era body, fields in the position order the firmware reads them."""
    fields: list[tuple[str, str]] = []
    for n, (url, user, pw) in enumerate(_padded(pools), start=1):
        fields += [(f"_ant_pool{n}url", url), (f"_ant_pool{n}user", user), (f"_ant_pool{n}pw", pw)]
    for field, key in FORM_FIELDS:
        value = conf.get(key)
        shown = ("true" if _flag(value) else "false") if key in _FLAGS else _text(value)
        fields.append((field, shown))
    if "bitmain-work-mode" in conf:
        fields.append(("_ant_work_mode", _text(conf.get("bitmain-work-mode"))))
    return fields


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _flag(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _mode(value: object) -> int:
    try:
        return int(str(value).strip() or MODE_NORMAL)
    except ValueError:
        return MODE_NORMAL


# -- HTTP: requests with Digest, our errors at this one edge ------------------------------


class _Web:
    """One session with a miner's web UI; every failure leaves as one of our errors."""

    def __init__(self, target: ChannelTarget) -> None:
        import requests
        from requests.auth import HTTPDigestAuth

        self.target = target
        self._requests = requests
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy or .netrc from the environment: LAN only
        self.session.auth = HTTPDigestAuth(target.user or "", target.password or "")
        host = f"[{target.host}]" if ":" in target.host else target.host
        self.base = f"http://{host}:{target.control_port}"

    def __enter__(self) -> _Web:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.session.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        payload: Mapping[str, Any] | None = None,
        form: Sequence[tuple[str, str]] | None = None,
        dropped_means: str = "it may have been carried out",
    ) -> requests.Response:
        """One request; NotSent, Unconfirmed, AuthFailed or ActionError on failure."""
        target, rq = self.target, self._requests
        where = f"{target.name}: {path.rsplit('/', 1)[-1]}"
        try:
            response = self.session.request(
                method,
                self.base + path,
                json=payload,
                data=None if form is None else list(form),
                timeout=(target.connect_timeout_s, target.timeout_s),
                allow_redirects=False,
            )
        except rq.ConnectTimeout:
            raise NotSent(
                f"{where}: no connection to {target.host}:{target.control_port} within "
                f"{target.connect_timeout_s:g} s; nothing sent"
            ) from None
        except rq.ReadTimeout:
            raise Unconfirmed(
                f"{where} sent, no answer within {target.timeout_s:g} s ({dropped_means}); "
                "verification will tell"
            ) from None
        except rq.ConnectionError as exc:
            reason = _never_sent(exc)
            if reason is not None:
                raise NotSent(
                    f"{where}: cannot connect to {target.host}:{target.control_port}: {reason}; "
                    "nothing sent"
                ) from None
            raise Unconfirmed(
                f"{where} sent, the connection dropped ({dropped_means}); verification will tell"
            ) from None
        except rq.ChunkedEncodingError:
            raise Unconfirmed(
                f"{where} sent, the answer was cut off ({dropped_means}); verification will tell"
            ) from None
        except rq.RequestException as exc:
            raise ActionError(f"{where}: {type(exc).__name__}") from None
        if response.status_code == 401:
            default = " (the factory default was tried)" if target.default_password else ""
            raise AuthFailed(
                f"{target.name}: the web UI refused the login as {target.user!r} (HTTP 401)"
                f"{default}; set credentials.password_file for {target.name}"
            )
        if response.status_code != 200:
            raise ActionError(
                f"{where} answered HTTP {response.status_code}: not the stock Antminer web UI?"
            )
        return response

    def get_conf(self) -> dict[str, Any]:
        """The saved configuration (get_miner_conf.cgi)."""
        text = self.call("GET", GET_CONF).text
        conf = _json_object(text)
        if conf is None:
            # Some firmware prints `"bitmain-fan-ctrl" : ,` for an unset flag (foreman).
            conf = _json_object(text.replace(": ,", ": false,"))
        if conf is None or not isinstance(conf.get("pools"), list):
            raise ActionError(
                f"{self.target.name}: get_miner_conf.cgi did not return a configuration "
                "with pools; nothing changed"
            )
        return conf

    def dialect(self, conf: Mapping[str, Any]) -> Dialect:
        """The set side's dialect; asks get_system_info.cgi only when the conf can't say."""
        if "miner-mode" in conf or "bitmain-work-mode" not in conf:
            return config_dialect(conf, None)
        try:
            info = _json_object(self.call("GET", SYSTEM_INFO).text) or {}
        except ActionError as exc:
            if type(exc) is not ActionError:  # the network or the login: no use going on
                raise
            info = {}  # an HTTP error: firmware without the page, the model stays unknown
        model = info.get("minertype")
        return config_dialect(conf, model if isinstance(model, str) else None)

    def set_conf(
        self,
        dialect: Dialect,
        conf: Mapping[str, Any],
        pools: Sequence[PoolEntry],
        *,
        mode: int | None,
    ) -> None:
        """Post the configuration in ``dialect``; ActionError if the firmware refuses it."""
        dropped = "bmminer restarts before it answers"
        if dialect == "json":
            response = self.call(
                "POST", SET_CONF, payload=json_body(conf, pools, mode), dropped_means=dropped
            )
        else:
            response = self.call(
                "POST", SET_CONF, form=form_body(conf, pools), dropped_means=dropped
            )
        _check_set_reply(self.target.name, response.text)


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _check_set_reply(name: str, text: str) -> None:
    """JSON firmware answers {"stats": "success", "code": "M000"}; the form's script
    answers ``ok`` (foreman accepts any reply containing "ok")."""
    reply = _json_object(text)
    if reply is not None:
        if reply.get("stats") == "success" or reply.get("code") == "M000":
            return
        why = reply.get("msg") or reply.get("stats") or "no reason given"
        raise ActionError(f"{name}: set_miner_conf.cgi refused the configuration: {why}")
    if "ok" in text.lower():
        return
    shown = " ".join(text.split())[:80] or "an empty reply"
    raise ActionError(f"{name}: set_miner_conf.cgi answered {shown!r}, not ok")


def _never_sent(exc: Exception) -> str | None:
    """Why a requests ConnectionError happened before anything was sent (refused, DNS),
    or None when the connection dropped after the request left."""
    from urllib3.exceptions import MaxRetryError, NameResolutionError, NewConnectionError

    reason: object = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    if isinstance(reason, NameResolutionError):
        return "the host name does not resolve"
    if isinstance(reason, NewConnectionError):
        found = _ERRNO.search(str(reason))
        return found.group(1).strip().lower() if found else "connection failed"
    return None
