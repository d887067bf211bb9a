"""What the benchmark records about the host it runs on: memory, RSS, CPUs, THP, git checkout."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from .constants import KiB


@dataclass
class HostInfo:
    hostname: str
    python: str
    platform: str
    cpu_count: Optional[int]
    mem_total_bytes: Optional[int]
    mem_available_bytes: Optional[int]
    transparent_hugepage: Optional[str]


@dataclass
class GitInfo:
    commit: Optional[str] = None
    dirty: Optional[bool] = None
    repo_dir: Optional[str] = None


def status_bytes(name: str) -> Optional[int]:
    """The kB field `name` of /proc/self/status (VmRSS, RssAnon, ...), in bytes (None where unavailable)."""
    prefix = name + ":"
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith(prefix):
                    return int(line.split()[1]) * KiB
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_bytes() -> Optional[int]:
    """VmRSS of this process, in bytes (None where unavailable)."""
    return status_bytes("VmRSS")


def rss_anon_bytes() -> Optional[int]:
    """RssAnon of this process (anonymous memory: where host backups live), in bytes (None where unavailable)."""
    return status_bytes("RssAnon")


_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def statm_rss_bytes() -> Optional[int]:
    """Resident bytes of this process from /proc/self/statm (None where unavailable): cheaper to read than
    /proc/self/status, for polling every millisecond."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return None


def meminfo() -> Dict[str, int]:
    """MemTotal, MemAvailable, HugePages_Total and Hugepagesize from /proc/meminfo (bytes or counts)."""
    info: Dict[str, int] = {}
    try:
        with open("/proc/meminfo", encoding="ascii", errors="replace") as lines:
            for line in lines:
                key, _, rest = line.partition(":")
                fields = rest.split()
                if key in ("MemTotal", "MemAvailable", "HugePages_Total", "Hugepagesize") and fields:
                    info[key] = int(fields[0]) * (KiB if len(fields) > 1 and fields[1] == "kB" else 1)
    except (OSError, ValueError):
        pass
    return info


def _read_text(path: str) -> Optional[str]:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return None


def host_info() -> HostInfo:
    mem = meminfo()
    return HostInfo(hostname=platform.node(), python=platform.python_version(), platform=platform.platform(),
                    cpu_count=os.cpu_count(), mem_total_bytes=mem.get("MemTotal"),
                    mem_available_bytes=mem.get("MemAvailable"),
                    transparent_hugepage=_read_text("/sys/kernel/mm/transparent_hugepage/enabled"))


def git_info() -> GitInfo:
    """Commit of the checkout the package runs from (or of the working directory), and whether it is dirty."""
    for where in (Path(__file__).resolve().parent, Path.cwd()):
        try:
            head = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"],
                                  capture_output=True, text=True, timeout=10)
            if head.returncode != 0:
                continue
            dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=20)
            return GitInfo(commit=head.stdout.strip(),
                           dirty=bool(dirty.stdout.strip()) if dirty.returncode == 0 else None,
                           repo_dir=str(where))
        except (OSError, subprocess.SubprocessError):
            continue
    return GitInfo()
