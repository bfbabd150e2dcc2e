"""Host-level machinery of the real lab: processes in a network namespace, mounts, cgroups, pod namespaces.

Components enter only the lab host's *network* namespace (``nsenter --net``), never a private mount
namespace of `ip netns exec`: the kubelet's volume mounts must be visible to its containerd. The lab's
state folder is made a shared mount so that they are, and it is unmounted recursively at teardown.
The kubelet alone runs in a mount namespace of its own, where the kernel settings it insists on
(vm.overcommit_memory, kernel.panic, ...) are shown to it by bind mounts instead of being written
into the host's kernel (``protectKernelDefaults: true`` then only reads them).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

from ...errors import CommpathError

CGROUP_FS = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/var/run/netns")
KUBELET_SYSCTLS = {"vm/overcommit_memory": 1, "vm/panic_on_oom": 0, "kernel/panic": 10, "kernel/panic_on_oops": 1,
                   "kernel/keys/root_maxkeys": 1000000, "kernel/keys/root_maxbytes": 25000000}


def in_netns(ns: str, cmd: list[str]) -> list[str]:
    return ["nsenter", f"--net={NETNS_DIR / ns}", "--", *cmd]


def run(ns: str, cmd: list[str], *, timeout: float = 60, check: bool = True, input: str | None = None,
        env: dict | None = None) -> subprocess.CompletedProcess:
    try:
        res = subprocess.run(in_netns(ns, cmd), capture_output=True, text=True, timeout=timeout, input=input,
                             env=dict(os.environ, **(env or {})))
    except subprocess.TimeoutExpired:
        raise CommpathError(f"real lab: `{' '.join(cmd[:4])} ...` timed out after {timeout:.0f}s") from None
    if check and res.returncode != 0:
        raise CommpathError(f"real lab: `{' '.join(cmd[:6])}` failed: {res.stderr.strip()[-500:]}")
    return res


def spawn(ns: str, cmd: list[str], log: Path, env: dict | None = None) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        proc = subprocess.Popen(in_netns(ns, cmd), stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True, env=dict(os.environ, **(env or {})))
    return proc.pid


def kubelet_command(ns: str, cmd: list[str], sysctl_dir: Path) -> list[str]:
    """Wrap the kubelet so that it sees its kernel settings in a private /proc without changing the host's."""
    sysctl_dir.mkdir(parents=True, exist_ok=True)
    binds = []
    for name, want in KUBELET_SYSCTLS.items():
        live = Path("/proc/sys") / name
        if live.exists() and live.read_text().strip() != str(want):
            shown = sysctl_dir / name.replace("/", ".")
            shown.write_text(f"{want}\n")
            binds.append(f"mount --bind {shlex.quote(str(shown))} {live}")
    script = " && ".join(["mount --make-rprivate /proc", *binds, "exec " + shlex.join(in_netns(ns, cmd))])
    return ["unshare", "-m", "--propagation", "unchanged", "--", "sh", "-c", script]


def spawn_raw(cmd: list[str], log: Path) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return proc.pid


def wait_until(probe, timeout: float, what: str, interval: float = 0.5, alive=None):
    """Poll ``probe()`` until it returns something truthy; bounded by ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except CommpathError as exc:
            last = None
            err = str(exc)
        else:
            err = ""
        if last:
            return last
        if alive is not None and not alive():
            raise CommpathError(f"real lab: {what}: the process exited {err}".strip())
        time.sleep(interval)
    raise CommpathError(f"real lab: {what} not ready after {timeout:.0f}s {err}".strip())


# ---------------------------------------------------------------- shared state folder
def share_mount(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    if not _is_mountpoint(d):
        subprocess.run(["mount", "--bind", str(d), str(d)], check=True, timeout=30)
    subprocess.run(["mount", "--make-rshared", str(d)], check=True, timeout=30)


def _is_mountpoint(d: Path) -> bool:
    return any(line.split()[4] == str(d) for line in Path("/proc/self/mountinfo").read_text().splitlines())


def unmount_under(d: Path) -> int:
    """Unmount everything at or below ``d`` (deepest first); returns how many mounts went."""
    n = 0
    for _ in range(5):   # overlay and tmpfs mounts may stack
        targets = sorted({line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
                          if line.split()[4] == str(d) or line.split()[4].startswith(str(d) + "/")},
                         key=len, reverse=True)
        if not targets:
            break
        for t in targets:
            if subprocess.run(["umount", "-l", t], capture_output=True, timeout=30).returncode == 0:
                n += 1
    return n


# ---------------------------------------------------------------- cgroups
def cgroup_dirs(root_name: str) -> list[Path]:
    if (CGROUP_FS / "cgroup.controllers").exists():     # cgroup v2: one hierarchy (untested here: the machines are v1)
        return [CGROUP_FS / root_name]
    return [c / root_name for c in CGROUP_FS.iterdir() if c.is_dir() and (c / "cgroup.procs").exists()]


def make_cgroup_root(root_name: str) -> None:
    """The kubelet wants its --cgroup-root to exist in every v1 hierarchy (cpuset needs cpus and mems)."""
    for d in cgroup_dirs(root_name):
        d.mkdir(exist_ok=True)
        if d.parent.name == "cpuset":
            for f in ("cpuset.cpus", "cpuset.mems"):
                (d / f).write_text((d.parent / f).read_text())


def pids_in_cgroup_root(root_name: str) -> set[int]:
    pids = set()
    for d in cgroup_dirs(root_name):
        if d.exists():
            for procs in d.rglob("cgroup.procs"):
                try:
                    pids.update(int(p) for p in procs.read_text().split())
                except OSError:
                    pass
    return pids


def remove_cgroup_root(root_name: str) -> None:
    for d in cgroup_dirs(root_name):
        if d.exists():
            for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                try:
                    sub.rmdir()
                except OSError:
                    pass
            try:
                d.rmdir()
            except OSError:
                pass


def kill_pids(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def netns_inodes(pids: set[int]) -> set[int]:
    inodes = set()
    for pid in pids:
        try:
            inodes.add(os.stat(f"/proc/{pid}/ns/net").st_ino)
        except OSError:
            pass
    return inodes


def pod_netns_names(state_dir: Path) -> set[str]:
    """Pod namespaces named in the lab's containerd metadata (also after a crash, when no process is left)."""
    names = set()
    for db in state_dir.glob("*/containerd/root/io.containerd.metadata.v1.bolt/meta.db"):
        names.update(m.decode() for m in re.findall(rb"/var/run/netns/(cni-[0-9a-f-]{36})", db.read_bytes()))
    return names


def delete_pod_netns(inodes: set[int], names: set[str]) -> list[str]:
    """Delete the runtime's pod namespaces that our pods used (by inode) or our containerd recorded (by name)."""
    removed = []
    if not NETNS_DIR.exists():
        return removed
    for entry in NETNS_DIR.iterdir():
        if not entry.name.startswith("cni-"):
            continue
        try:
            ino = os.stat(entry).st_ino
        except OSError:
            continue
        if ino in inodes or entry.name in names:
            if subprocess.run(["ip", "netns", "del", entry.name], capture_output=True, timeout=30).returncode == 0:
                removed.append(entry.name)
    return removed


RUNC_ROOT = Path("/run/containerd/runc/k8s.io")          # the runc shim's state folder (fixed by containerd)
DEVICE_PLUGINS = Path("/var/lib/kubelet/device-plugins")  # the kubelet's device-plugin socket (fixed path)


def forget_containers(state_dir: Path) -> None:
    """Drop runc's state of the lab's containers (they were killed, not deleted through the runtime)."""
    for task in state_dir.glob("*/containerd/state/io.containerd.runtime.v2.task/k8s.io/*"):
        if (RUNC_ROOT / task.name).is_dir():
            res = subprocess.run(["runc", "--root", str(RUNC_ROOT), "delete", "--force", task.name],
                                 capture_output=True, timeout=30)
            if res.returncode != 0:
                shutil.rmtree(RUNC_ROOT / task.name, ignore_errors=True)


def remove_kubelet_leftovers(state_root: Path) -> None:
    """The kubelet creates its device-plugin socket outside --root-dir; remove it when no real lab is up."""
    if state_root.exists() and any(state_root.iterdir()):
        return
    for leftover in (DEVICE_PLUGINS / "kubelet.sock", DEVICE_PLUGINS, DEVICE_PLUGINS.parent):
        try:
            leftover.unlink() if leftover.is_socket() else leftover.rmdir()   # folders only if empty
        except OSError:
            pass
