"""The service's sandbox, proven to let the station run.

systemd itself cannot run here (no PID 1), so the settings that act inside the
process are applied the way systemd applies them, read from
`systemd/station.service`: the system-call filter (an allow-list from
`systemd-analyze syscall-filter`, loaded with libseccomp, other calls failing
with the unit's SystemCallErrorNumber), an empty capability bounding set,
no-new-privileges and the umask. The virtual line then runs a full job under
them, the operator's page included. The namespace and cgroup settings
(ProtectSystem, PrivateTmp, DeviceAllow, IPAddressDeny...) need systemd and are
checked by `systemd-analyze security` in test_station_parts.py.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "station.service"
PR_SET_NO_NEW_PRIVS = 38
PR_CAPBSET_DROP = 24
CAP_LAST = 63


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def expand(group_or_call: str, analyze: str, seen: set[str] | None = None) -> set[str]:
    """A syscall name, or a @group expanded (recursively) by systemd's own tables."""
    if not group_or_call.startswith("@"):
        return {group_or_call}
    seen = set() if seen is None else seen
    if group_or_call in seen:
        return set()
    seen.add(group_or_call)
    listing = subprocess.run(
        [analyze, "syscall-filter", group_or_call], capture_output=True, text=True, check=True
    ).stdout
    calls: set[str] = set()
    for line in listing.splitlines()[1:]:
        item = line.strip()
        if item and not item.startswith("#"):
            calls |= expand(item, analyze, seen)
    return calls


def allowed_syscalls(settings: dict[str, list[str]], analyze: str) -> set[str]:
    """SystemCallFilter= lines in order: an allow-list, then ~ lines taking calls out."""
    allowed: set[str] = set()
    for value in settings["SystemCallFilter"]:
        deny = value.startswith("~")
        names: set[str] = set()
        for item in value.lstrip("~").split():
            names |= expand(item, analyze)
        allowed = allowed - names if deny else allowed | names
    return allowed


def sandbox(allowed: set[str], error: int, umask: int):
    """The preexec function: what systemd does between fork and exec."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    seccomp = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    seccomp.seccomp_init.restype = ctypes.c_void_p
    seccomp.seccomp_init.argtypes = [ctypes.c_uint32]
    seccomp.seccomp_rule_add.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
    ]
    seccomp.seccomp_load.argtypes = [ctypes.c_void_p]
    seccomp.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    numbers = [seccomp.seccomp_syscall_resolve_name(name.encode()) for name in sorted(allowed)]
    numbers = [n for n in numbers if n >= 0]  # names of other architectures
    scmp_act_allow, scmp_act_errno = 0x7FFF0000, 0x00050000

    def apply() -> None:
        os.umask(umask)
        for cap in range(CAP_LAST + 1):
            libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the kernel's last: fine
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
        ctx = seccomp.seccomp_init(scmp_act_errno | error)
        for number in numbers:
            seccomp.seccomp_rule_add(ctx, scmp_act_allow, number, 0)
        if seccomp.seccomp_load(ctx) != 0:
            raise OSError(ctypes.get_errno(), "seccomp_load")

    return apply


def test_the_virtual_line_runs_under_the_unit_s_sandbox(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (tools/setup installs the systemd package)")
    try:
        ctypes.CDLL("libseccomp.so.2")
    except OSError:
        pytest.skip("libseccomp not installed (it comes with systemd)")
    settings = unit_settings()
    assert settings["CapabilityBoundingSet"] == [""] and settings["NoNewPrivileges"] == ["yes"]
    allowed = allowed_syscalls(settings, analyze)
    assert "reboot" not in allowed and "setrlimit" not in allowed and "read" in allowed
    error = getattr(errno, settings["SystemCallErrorNumber"][0])
    umask = int(settings["UMask"][0], 8)
    probe = subprocess.run(  # the filter is really on: setpriority is in ~@resources
        [sys.executable, "-c", "import os; os.nice(1)"],
        capture_output=True,
        text=True,
        preexec_fn=sandbox(allowed, error, umask),
    )
    assert probe.returncode != 0 and "Operation not permitted" in probe.stderr, probe.stderr
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "station",
        "run",
        "--virtual-line",
        "--parts",
        "20",
        "--json",
        "--out",
        str(out),
        "--web",
        "127.0.0.1:0",
    ]
    result = subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=sandbox(allowed, error, umask),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["lost"] == 0 and summary["routed_as_verdict"] == summary["parts"] == 20
    database = Path(summary["audit_database"])
    assert database.stat().st_mode & 0o077 == 0  # UMask=0077: written for the service only
