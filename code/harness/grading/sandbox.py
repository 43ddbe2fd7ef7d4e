"""Running a submission's code in a child process it cannot escape: its own file system, user, network
namespace, memory and process caps, a wall-clock timer, and nothing left running afterwards.

The grader (root) starts `unshare --mount --net --pid --fork --kill-child` over jail.py, which mounts a
tmpfs root holding only the system, Python, the grader's runtime (the harness without our solution), the
inputs it is handed and the submission's working copy, then runs the child as an unprivileged user of
its own (a UID per parallel slot, no /etc/passwd entry). Around it:

    memory      a cgroup-v1 memory controller caps resident memory (the OOM killer ends the child);
                RLIMIT_AS stays a loose backstop only, since PyTorch reserves ~3.3 GB of address
                space for ~0.5 GB resident after `import torch` (measured on this machine)
    processes   a cgroup pids.max, and RLIMIT_NPROC for the slot's UID
    files       RLIMIT_FSIZE per file, tmpfs sizes for /tmp and /dev/shm, RLIMIT_CORE 0
    time        a wall-clock deadline the caller moves on each status line; on expiry the whole
                process group and its PID namespace are killed
    output      stdout and stderr kept up to a limit, the rest counted and dropped

Where namespaces cannot be made (not root, or a container that forbids unshare), or GRADER_ISOLATION=off,
`isolation_available()` says so and run() falls back to a plain child process with the rlimits only, its
processes found and killed afterwards by a token in their environment: the grader's summary says that
the network and the file system were not closed off.
"""
import os
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import files

JAIL = Path(__file__).resolve().with_name("jail.py")
SYSTEM_PATHS = ("/usr", "/bin", "/lib", "/lib64", "/lib32", "/sbin", "/etc")
FIRST_UID = 61000  # slot k runs as UID FIRST_UID + k
_isolation = {}


@dataclass
class Limits:
    memory_bytes: int = 3 * 2**30
    address_space_bytes: int = 32 * 2**30  # a backstop: see the module's docstring
    processes: int = 256  # tasks (threads count) of the slot's UID and cgroup
    file_bytes: int = 256 * 2**20
    open_files: int = 256
    stdout_bytes: int = 20_000
    threads: int = 1


@dataclass
class Outcome:
    """How a child ended: returncode, why ("exited", "timeout", "out of memory", "killed by signal N"),
    its output cut at the limit (with a line saying how much was dropped), and its wall time."""

    returncode: int
    reason: str
    output: str = ""
    wall_s: float = 0.0
    timed_out_at: str = ""  # the status line after which the deadline passed
    notes: list = field(default_factory=list)


def isolation_available():
    """(True, "") when namespaces, chroot and a UID change work here; else (False, why)."""
    if "result" not in _isolation:
        if os.environ.get("GRADER_ISOLATION") == "off":
            _isolation["result"] = (False, "switched off (GRADER_ISOLATION=off)")
        elif os.geteuid() != 0:
            _isolation["result"] = (False, "the grader does not run as root")
        else:
            try:
                probe = subprocess.run(["unshare", "--mount", "--net", "--pid", "--fork", "true"],
                                       capture_output=True, timeout=30)
                ok = probe.returncode == 0
                why = "" if ok else probe.stderr.decode(errors="replace").strip()[:200]
            except (OSError, subprocess.TimeoutExpired) as exc:
                ok, why = False, str(exc)
            _isolation["result"] = (ok, f"unshare failed: {why}" if not ok else "")
    return _isolation["result"]


def python_paths():
    """The host paths the child's Python needs, read-only: the interpreter's prefixes and site-packages."""
    import site

    paths = {sys.prefix, sys.base_prefix, *site.getsitepackages()}
    exe = os.path.realpath(sys.executable)
    paths.add(str(Path(exe).parent.parent))
    return sorted(p for p in paths if os.path.isdir(p) and not p.startswith(SYSTEM_PATHS))


class _Cgroups:
    """A memory and a pids cgroup (v1) for one child, when the host lets us make them."""

    def __init__(self, name, limits):
        self.dirs, self.procs, self.notes = {}, [], []
        for controller, settings in (("memory", {"memory.limit_in_bytes": limits.memory_bytes}),
                                     ("pids", {"pids.max": limits.processes})):
            base = _own_cgroup(controller)
            if base is None:
                continue
            folder = base / name
            try:
                folder.mkdir(exist_ok=True)
                for key, value in settings.items():
                    (folder / key).write_text(str(value))
                if controller == "memory":  # no swapping past the cap: the OOM killer ends the child instead
                    for key in ("memory.swappiness", "memory.memsw.limit_in_bytes"):
                        if (folder / key).exists():
                            (folder / key).write_text("0" if key.endswith("swappiness") else str(limits.memory_bytes))
            except OSError as exc:
                self.notes.append(f"no {controller} cgroup ({exc.strerror})")
                continue
            self.dirs[controller] = folder
            self.procs.append(str(folder / "cgroup.procs"))

    def out_of_memory(self):
        """(killed by the OOM killer, reached the cap at all)."""
        folder = self.dirs.get("memory")
        if folder is None:
            return False, False
        try:
            fields = dict(line.split() for line in (folder / "memory.oom_control").read_text().splitlines())
            at_cap = int((folder / "memory.failcnt").read_text()) > 0
            # kernels since 4.13 count the OOM killer's kills; before, reaching the cap is all we know
            return (int(fields["oom_kill"]) > 0 if "oom_kill" in fields else at_cap), at_cap
        except (OSError, ValueError):
            return False, False

    def remove(self):
        for folder in self.dirs.values():
            for _ in range(50):  # the killed tasks leave the cgroup within milliseconds
                try:
                    folder.rmdir()
                    break
                except OSError:
                    time.sleep(0.05)


def _own_cgroup(controller):
    root = Path("/sys/fs/cgroup") / controller
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, names, path = line.split(":", 2)
            if controller in names.split(","):
                folder = root / path.lstrip("/")
                return folder if os.access(folder, os.W_OK) else None
    except OSError:
        return None
    return None


def run(argv, *, env, work, slot, limits, ro=(), scratch, on_status=None, deadline):
    """Run `argv` (inside the jail's paths) with cwd `work` mounted at /work, as slot `slot`'s user.

    ro: [(host, inside)] read-only binds besides the system and Python. The child writes status lines
    to the file descriptor named by the STATUS_FD environment variable; on_status(line) may return a new
    absolute deadline (time.monotonic()), so each check gets its own timeout. Returns an Outcome."""
    uid = FIRST_UID + slot
    isolated, _ = isolation_available()
    read_fd, write_fd = os.pipe()
    env = dict(env, STATUS_FD=str(write_fd))
    cgroups = _Cgroups(f"grader-{os.getpid()}-{slot}-{time.monotonic_ns()}", limits) if isolated else None
    rlimits = {"RLIMIT_AS": limits.address_space_bytes, "RLIMIT_NPROC": limits.processes,
               "RLIMIT_FSIZE": limits.file_bytes, "RLIMIT_NOFILE": limits.open_files, "RLIMIT_CORE": 0}
    if isolated:
        root = Path(scratch) / f"root-{slot}"
        root.mkdir(parents=True, exist_ok=True)
        binds = [(p, p) for p in (*SYSTEM_PATHS, *python_paths())] + [list(pair) for pair in ro]
        spec = {"root": str(root), "ro": binds, "rw": [[str(work), "/work"]], "uid": uid, "rlimits": rlimits,
                "cgroups": cgroups.procs, "argv": argv, "env": env, "cwd": "/work"}
        spec_path = Path(scratch) / f"jail-{slot}.json"
        files.write_json(spec, spec_path)
        command = ["unshare", "--mount", "--net", "--pid", "--fork", "--kill-child", "--propagation", "private",
                   os.path.realpath(sys.executable), "-I", "-S", str(JAIL), str(spec_path)]
        preexec = None
    else:  # no namespaces: the rlimits only, in the submission's folder, as this user
        command = [argv[0], *argv[1:]]
        token = f"{os.getpid()}-{slot}-{time.monotonic_ns()}"
        env = dict(env, GRADER_WORK=str(work), GRADER_TOKEN=token)

        def preexec():
            import resource
            for name, value in rlimits.items():
                if name != "RLIMIT_NPROC":
                    resource.setrlimit(getattr(resource, name), (value, value))
    start = time.monotonic()
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, pass_fds=(write_fd,), start_new_session=True,
                               env=env if not isolated else {"PATH": "/usr/bin:/bin"},
                               cwd=None if isolated else str(work), preexec_fn=preexec)
    os.close(write_fd)
    output = _Capture(process.stdout, limits.stdout_bytes)
    timed_out_at, last_line, buffer = "", "", b""
    try:
        with os.fdopen(read_fd, "rb", buffering=0) as status:
            while True:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    timed_out_at = last_line or "start"
                    break
                ready, _, _ = select.select([status], [], [], min(wait, 1.0))
                if not ready:
                    continue
                chunk = status.read(4096)
                if not chunk:  # every copy of the write end is closed: the child has ended
                    break
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    last_line = line.decode(errors="replace")[:200]
                    if on_status is not None:
                        new = on_status(last_line)
                        if new is not None:
                            deadline = new
                if len(buffer) > 65536:
                    buffer = b""
    finally:
        _kill_group(process)
        if not isolated:  # no PID namespace: what left the group (setsid) is found by the token it inherited
            _kill_carrying(f"GRADER_TOKEN={token}".encode())
        returncode = process.wait()
        output.join(timeout=10)  # a process that escaped and holds the pipe must not hang the grader
        if cgroups is not None:
            oom, at_cap = cgroups.out_of_memory()
            cgroups.remove()
        else:
            oom = at_cap = False
    wall = time.monotonic() - start
    # Killed by the OOM killer; or timed out at the cap: the kernel evicting and re-reading PyTorch's
    # mapped libraries (file pages count in the cgroup) can stall a process there instead of killing it.
    if oom or (timed_out_at and at_cap):
        reason = "out of memory"
    elif timed_out_at:
        reason = "timeout"
    elif returncode > 128 and isolated:  # jail.py reports a signal as 128 + N
        reason = f"killed by signal {signal.Signals(returncode - 128).name}" if returncode - 128 < 65 else "exited"
    elif returncode < 0:
        reason = f"killed by signal {signal.Signals(-returncode).name}"
    else:
        reason = "exited"
    return Outcome(returncode, reason, output.text(), wall, timed_out_at, cgroups.notes if cgroups else [])


def _kill_group(process):
    """SIGKILL the child's process group: unshare and jail.py (process 1 of the PID namespace, whose
    death takes every process of the namespace with it); without namespaces, the group is all there is."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_carrying(marker):
    """SIGKILL every process whose environment holds `marker` (a submission's processes, without namespaces;
    one that rewrote its own environment escapes this: the summary says the run was not isolated)."""
    for _ in range(3):  # a process may fork while the first sweep runs
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    with open(f"/proc/{entry.name}/environ", "rb") as f:
                        if marker in f.read().split(b"\0"):
                            os.kill(int(entry.name), signal.SIGKILL)
                except (OSError, ValueError):
                    pass


class _Capture(threading.Thread):
    """Reads a pipe to its end, keeping the first `limit` bytes."""

    def __init__(self, pipe, limit):
        super().__init__(daemon=True)
        self.pipe, self.limit, self.kept, self.dropped = pipe, limit, bytearray(), 0
        self.start()

    def run(self):
        while True:
            chunk = self.pipe.read1(65536) if hasattr(self.pipe, "read1") else self.pipe.read(65536)
            if not chunk:
                break
            room = self.limit - len(self.kept)
            self.kept += chunk[:max(room, 0)]
            self.dropped += max(len(chunk) - max(room, 0), 0)
        self.pipe.close()

    def text(self):
        text = self.kept.decode(errors="replace")
        return text + (f"\n[... {self.dropped} more bytes of output dropped]" if self.dropped else "")
