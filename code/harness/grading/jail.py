"""The first process inside a submission's namespaces: builds its file system, drops root, starts the child.

The grader starts it, as root, as
    unshare --mount --net --pid --fork --kill-child --propagation private  python -I -S jail.py SPEC.json
so it is process 1 of a fresh PID namespace (when it ends, the kernel kills every process left in the
namespace), with a network namespace of its own (no interface but a loopback that is down) and a mount
namespace of its own. It uses the standard library only (it runs before site-packages exist in the jail).

SPEC (JSON, written by sandbox.py):
    root          an empty folder: a tmpfs is mounted on it and becomes "/"
    ro            [[host, inside]] bound read-only (the system and Python at their own place, the runtime, inputs)
    rw            [[host, inside]] bound read-write (the submission's working copy)
    uid           the unprivileged user and group the child runs as (no /etc/passwd entry needed)
    rlimits       {"RLIMIT_AS": bytes, ...}
    cgroups       cgroup.procs files to join before anything else starts (memory, pids)
    argv, env, cwd

The child sees nothing of the host but these paths: not the other submissions, the staff's labels, the
rubric or the reference's answers. It can write only into its working copy, /tmp and /dev/shm (tmpfs).
"""
import ctypes
import json
import os
import resource
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 32, 4096, 16384
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
DEVICES = ("null", "zero", "random", "urandom")
_libc = ctypes.CDLL(None, use_errno=True)


def mount(source, target, fstype=None, flags=0, data=None):
    enc = (lambda s: None if s is None else s.encode())
    if _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {source} on {target}: {os.strerror(errno)}")


def bind(host, inside, writable=False, device=False):
    if os.path.isdir(host):
        os.makedirs(inside, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(inside), exist_ok=True)
        open(inside, "a").close()
    mount(host, inside, None, MS_BIND | MS_REC)
    flags = MS_REMOUNT | MS_BIND | MS_NOSUID | (0 if writable else MS_RDONLY)
    mount(None, inside, None, flags | (MS_NODEV if writable and not device else 0))


def build_root(spec):
    root = spec["root"]
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=0755")
    for path, inside in spec["ro"]:
        if os.path.islink(path) and path == inside:  # /bin -> usr/bin on merged-/usr systems
            if not os.path.lexists(root + inside):
                os.makedirs(os.path.dirname(root + inside), exist_ok=True)
                os.symlink(os.readlink(path), root + inside)
        elif os.path.exists(path):
            bind(path, root + inside)
    for host, inside in spec["rw"]:
        bind(host, root + inside, writable=True)
    for name in DEVICES:
        bind(f"/dev/{name}", f"{root}/dev/{name}", writable=True, device=True)
    for folder, size in (("/tmp", spec.get("tmp_size", "256m")), ("/dev/shm", spec.get("shm_size", "256m"))):
        os.makedirs(root + folder, exist_ok=True)
        mount("tmpfs", root + folder, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode=1777")
    os.makedirs(root + "/proc", exist_ok=True)
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV)
    os.chroot(root)
    os.chdir("/")


def drop_to(uid):
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    _libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)  # the credential change cleared it


def main(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    for procs in spec.get("cgroups", []):  # before any fork, so every process of the child is counted
        with open(procs, "w") as f:
            f.write(str(os.getpid()))
    build_root(spec)
    pid = os.fork()
    if pid == 0:
        try:
            for name, value in spec.get("rlimits", {}).items():
                resource.setrlimit(getattr(resource, name), (value, value))
            drop_to(spec["uid"])
            os.chdir(spec["cwd"])
            os.execve(spec["argv"][0], spec["argv"], spec["env"])
        except BaseException as exc:  # noqa: BLE001 - a child that cannot start says why, on stderr
            os.write(2, f"jail: cannot start the child: {exc}\n".encode())
            os._exit(125)
    while True:  # process 1 reaps every orphan until the child itself ends
        ended, status = os.wait()
        if ended == pid:
            os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


if __name__ == "__main__":
    main(sys.argv[1])
