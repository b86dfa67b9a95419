"""The executor: carries out what the planner decided, through each miner's channel.

An action that names what to do (``restart``, ``reboot``, ``switchpool``,
``disable``/``enable``, ``sleep``/``wake``) goes to the miner's firmware family's control
channel (``cgwatchdog/firmware/``), which maps it to the family's own calls and
authentication; ``exec`` runs the operator's program (no shell, a minimal environment,
killed with its process group at its timeout); a probe asks the channel whether it
would take a command again.

The channel's typed errors become the outcome's flags, never by reading messages:
``NotSent`` and other failures fail the step, ``Unconfirmed`` (sent, the connection
dropped: reboots do that) leaves the judgement to verification, ``ControlDenied``
(``AuthFailed``, ``WriteDisabled``, Code 45) marks the miner as refusing control,
``SessionBusy`` lets the step wait and be tried again. The executor never raises for
what a miner or a program does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable

from cgwatchdog.actions.planner import PROBE, ActionOutcome, PlannedAction
from cgwatchdog.config import MinerConfig
from cgwatchdog.errors import (
    ActionError,
    CgwatchdogError,
    ControlDenied,
    SessionBusy,
    Unconfirmed,
)
from cgwatchdog.firmware import ActionRequest, Channel
from cgwatchdog.units import format_duration

__all__ = ["KILL_GRACE_S", "SAFE_PATH", "ActionExecutor", "ChannelFor"]

log = logging.getLogger("cgwatchdog.actions")

# exec: the environment is this PATH plus the action's CGWATCHDOG_* variables, nothing
# inherited from the daemon (which may hold secrets in its environment).
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
KILL_GRACE_S = 2.0  # SIGTERM to SIGKILL for a program past its timeout
_OUTPUT_TAIL_BYTES = 2048
_DETAIL_CHARS = 400

ChannelFor = Callable[[MinerConfig, float], Channel]
"""The control channel of a miner (with this step's timeout), as its family provides
it; raises ActionError (e.g. NotSent) when there is none to use."""


class ActionExecutor:
    """Carries out planned actions through miners' control channels and ``exec``.

    Never raises for what the miner or the program does: every failure becomes an
    :class:`~cgwatchdog.actions.planner.ActionOutcome` with ``ok`` False and a
    one-line ``detail``.
    """

    def __init__(
        self,
        channel_for: ChannelFor,
        *,
        clock: Callable[[], float] = time.time,
        kill_grace_s: float = KILL_GRACE_S,
    ) -> None:
        self.channel_for = channel_for
        self.clock = clock
        self.kill_grace_s = kill_grace_s

    async def execute(self, action: PlannedAction, miner: MinerConfig) -> ActionOutcome:
        """Carry out ``action`` on ``miner``; a dry run only logs it."""
        extra = {"MINER": action.miner, "ALERTNAME": action.alertname}
        started = self.clock()
        if action.dry_run:
            detail = f"dry run: would {action.describe()} ({action.reason})"
            log.info("%s: %s", action.miner, detail, extra=extra)
            return ActionOutcome(action, True, detail, started, started)
        log.info("%s: %s (%s)", action.miner, action.describe(), action.reason, extra=extra)
        denied = unconfirmed = retry = False
        try:
            if action.argv is not None:
                detail = await self._exec(action)
            else:
                channel = self.channel_for(miner, action.timeout_s)
                if action.do == PROBE:
                    detail = await channel.check_access()
                else:
                    request = ActionRequest(action.do, action.pool, action.pools, action.device)
                    detail = await channel.perform(request)
            ok = True
        except ControlDenied as exc:
            ok, denied, detail = False, True, str(exc)
        except SessionBusy as exc:
            ok, retry, detail = False, True, str(exc)
        except Unconfirmed as exc:
            # Sent, but the reply got lost (a reboot drops the connection): it may have
            # happened, and verification will tell.
            ok, unconfirmed, detail = False, action.do != PROBE, str(exc)
        except CgwatchdogError as exc:
            ok, detail = False, str(exc)
        finished = self.clock()
        level = logging.INFO if ok else logging.WARNING
        log.log(level, "%s: %s %s: %s", action.miner, action.describe(),
                "done" if ok else "failed", detail, extra=extra)  # fmt: skip
        return ActionOutcome(
            action, ok, detail[:_DETAIL_CHARS * 2], started, finished, denied, unconfirmed, retry
        )

    async def _exec(self, action: PlannedAction) -> str:
        assert action.argv is not None
        env = {"PATH": SAFE_PATH, **action.env}
        try:
            proc = await asyncio.create_subprocess_exec(
                *action.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group, killed as a whole
                close_fds=True,
            )
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ActionError(f"cannot run {action.argv[0]}: {reason}") from None
        tail = bytearray()
        try:
            async with asyncio.timeout(action.timeout_s):
                assert proc.stdout is not None
                while chunk := await proc.stdout.read(65536):
                    tail += chunk
                    del tail[:-_OUTPUT_TAIL_BYTES]
                status = await proc.wait()
        except TimeoutError:
            await self._kill(proc)
            output = _output(tail)
            raise ActionError(
                f"{action.argv[0]} timed out after {format_duration(action.timeout_s)}; killed its "
                f"process group{': ' + output if output else ''}"
            ) from None
        except asyncio.CancelledError:
            await asyncio.shield(self._kill(proc))
            raise
        output = _output(tail)
        if status == 0:
            return output or "exit status 0"
        if status < 0:
            name = (
                signal.Signals(-status).name if -status in signal.valid_signals() else str(-status)
            )
            why = f"killed by {name}"
        else:
            why = f"exit status {status}"
        raise ActionError(f"{action.argv[0]}: {why}{': ' + output if output else ''}")

    async def _kill(self, proc: asyncio.subprocess.Process) -> None:
        """SIGTERM the program's process group, SIGKILL it after the grace, reap it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.kill_grace_s):
                await proc.wait()
        # Even when the leader obeyed, children it started may not have: KILL the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


def _output(tail: bytes | bytearray) -> str:
    text = bytes(tail).decode("utf-8", "replace").strip()
    text = " | ".join(line.strip() for line in text.splitlines() if line.strip())
    return text[-_DETAIL_CHARS:]
