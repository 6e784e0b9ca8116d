#!/usr/bin/python3
"""Boots the outer guest of scripts/vm-tests.sh under QEMU TCG and runs pytest there; returns
pytest's verdict over every test asked for.

QEMU 7.2's TCG emulation of AMD SVM wedges now and then: the outer guest stops making any
progress (every outer CPU stuck, or one stuck inside a nested guest with no #VMEXIT), seen
once in every few full runs at a different test each time. A user-space VMM cannot stop its
host kernel's CPUs, so this is the emulator's, and a wedged outer guest cannot report. The
outer guest therefore writes a heartbeat (its init, every 5 s) and pytest writes which test
starts and ends (scripts/nested/progress.py), both to the shared job directory. With no
heartbeat for KAPSEL_NESTED_WEDGE seconds (or when the outer kernel panics, seen twice in
kapsel's vCPU thread: "corrupted stack end detected inside scheduler"), this kills QEMU, says
loudly which test was running,
and boots a fresh outer guest for that test and those not yet run; a test that wedges the outer
guest twice fails, as does a fifth wedge in one stage. A test that fails is never rerun.

usage: run.py JOBDIR VMLINUZ REPO -- PYTEST-ARGS...   (environment: see scripts/vm-tests.sh)"""
import os
import shlex
import subprocess
import sys
import threading
import time

MAX_WEDGES = 4
HERE = os.path.dirname(os.path.abspath(__file__))


def job_script(repo, pytest_args, deselect):
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "KAPSEL": os.environ["KAPSEL"],
        "KAPSEL_LINUX_DEB": os.environ["KAPSEL_LINUX_DEB"],
        "KAPSEL_LINUX_ROOT": os.environ["KAPSEL_LINUX_ROOT"],
        # Real SVM: the Linux-guest tests need not time a guest loop to know they can boot.
        "KAPSEL_NESTED_SVM": "1",
        "KAPSEL_NESTED_PROGRESS": "/kapsel-job/progress",
        "PYTHONPATH": HERE,
        "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0"),
        "UBSAN_OPTIONS": os.environ.get("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1"),
    }
    if os.environ.get("KAPSEL_GUESTS"):
        env["KAPSEL_GUESTS"] = os.environ["KAPSEL_GUESTS"]
    lines = ["#!/bin/sh"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    lines.append(f"cd {shlex.quote(repo)} || exit 1")
    lines.append('echo "kapsel-nested: Linux $(uname -r), $(grep -c ^processor /proc/cpuinfo) '
                 'CPUs, $(ls -l /dev/kvm)"')
    cmd = ["/usr/bin/python3", "-m", "pytest", "-p", "progress", "--color=no",
           "--durations=5", "-q", "-rs", "-p", "no:cacheprovider", *pytest_args]
    for nodeid in deselect:
        cmd += ["--deselect", nodeid]
    lines.append(" ".join(shlex.quote(c) for c in cmd))
    return "\n".join(lines) + "\n"


def read_progress(path):
    """(started, done, failed): node ids in the order pytest reported them."""
    started, done, failed = [], [], []
    try:
        with open(path) as f:
            for line in f:
                kind, _, nodeid = line.rstrip("\n").partition(" ")
                {"START": started, "DONE": done, "FAILED": failed}.get(kind, []).append(nodeid)
    except FileNotFoundError:
        pass
    return started, done, failed


def boot(job, vmlinuz, limit, wedge_after):
    """One outer guest: returns ("exit", rc) with pytest's status, ("wedged", seconds) when the
    heartbeat stopped, ("error", line) for a setup failure or a QEMU exit without a result."""
    for name in ("rc", "heartbeat"):
        try:
            os.unlink(os.path.join(job, name))
        except FileNotFoundError:
            pass
    cmd = [os.environ.get("KAPSEL_NESTED_QEMU", "qemu-system-x86_64")]
    for d in filter(None, os.environ.get("KAPSEL_NESTED_QEMU_DATA", "").split(":")):
        cmd += ["-L", d]
    cmd += ["-accel",
           "tcg,thread=" + os.environ.get("KAPSEL_NESTED_TCG_THREAD", "multi"), "-cpu", "max",
           "-smp", os.environ.get("KAPSEL_NESTED_CPUS", "2"),
           "-m", os.environ.get("KAPSEL_NESTED_MEM", "4G"),
           "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
           "-chardev", "stdio,id=con,signal=off", "-serial", "chardev:con",
           "-kernel", vmlinuz, "-initrd", os.path.join(job, "initrd.cpio"),
           # panic=-1 with -no-reboot: an outer kernel panic is QEMU's exit.
           "-append", "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init kapsel.nested=1",
           "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,"
           "multidevs=remap",
           "-virtfs", f"local,path={job},mount_tag=job,security_model=none,multidevs=remap",
           "-drive", f"file={job}/scratch.img,if=virtio,format=raw,cache=unsafe,discard=unmap"]
    log = open(os.path.join(job, "console.log"), "ab")
    q = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    tail = []

    def pump():
        for chunk in iter(lambda: q.stdout.read1(65536), b""):
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
            log.write(chunk)
            log.flush()
            tail.append(chunk)
            del tail[:-64]

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    start = time.monotonic()
    hb = os.path.join(job, "heartbeat")
    verdict = None
    while q.poll() is None:
        time.sleep(2)
        now = time.monotonic()
        if now - start > limit:
            verdict = ("error", f"the outer guest ran past KAPSEL_NESTED_TIMEOUT={limit}s")
            break
        # Before the first heartbeat the guest is booting; count from the start then.
        last = os.path.getmtime(hb) if os.path.exists(hb) else None
        quiet = time.time() - last if last else now - start
        if quiet > wedge_after and (last or now - start > 2 * wedge_after):
            verdict = ("wedged", int(quiet))
            break
    if q.poll() is None:
        q.kill()
    q.wait()
    t.join(timeout=10)
    log.close()
    if verdict:
        return verdict
    rc_file = os.path.join(job, "rc")
    if os.path.exists(rc_file):
        return ("exit", int(open(rc_file).read().strip() or 1))
    text = b"".join(tail).decode(errors="replace")
    for line in text.splitlines():
        if "KAPSEL-NESTED-ERROR: " in line:
            return ("error", line.split("KAPSEL-NESTED-ERROR: ", 1)[1].strip())
    # The outer kernel's panic (panic=-1 and -no-reboot make it QEMU's exit): seen as
    # "corrupted stack end detected inside scheduler" in kapsel's vCPU thread, i.e. the
    # emulated VMRUN/#VMEXIT left the outer kernel on a bad stack, like the wedges.
    for line in text.splitlines():
        if "Kernel panic - not syncing" in line:
            return ("wedged", "the outer kernel panicked: " +
                    line.split("Kernel panic - not syncing", 1)[1].strip(": \r"))
    return ("error", f"the outer guest stopped without a result (QEMU exit status "
                     f"{q.returncode}; its console is above)")


def main():
    job, vmlinuz, repo = sys.argv[1:4]
    assert sys.argv[4] == "--"
    pytest_args = sys.argv[5:]
    limit = int(os.environ.get("KAPSEL_NESTED_TIMEOUT", "1500"))
    wedge_after = int(os.environ.get("KAPSEL_NESTED_WEDGE", "90"))
    progress = os.path.join(job, "progress")
    wedged = {}
    stage_start = time.monotonic()
    # The outer guest mounts its scratch disk on /tmp, which would hide a checkout (or a kapsel
    # binary) under the host's /tmp: the init keeps the paths listed here visible over it.
    keep = sorted({os.path.realpath(p) for p in (repo, os.path.dirname(os.environ["KAPSEL"]))
                   if os.path.realpath(p).startswith("/tmp/")})
    with open(os.path.join(job, "keep"), "w") as f:
        f.write("".join(p + "\n" for p in keep))
    while True:
        _, done, _ = read_progress(progress)
        with open(os.path.join(job, "job.sh"), "w") as f:
            f.write(job_script(repo, pytest_args, done))
        left = int(limit - (time.monotonic() - stage_start))
        if left <= 60:
            print(f"vm-tests: nested stage failed: no time left in "
                  f"KAPSEL_NESTED_TIMEOUT={limit}s", flush=True)
            return 1
        kind, value = boot(job, vmlinuz, left, wedge_after)
        started, done, failed = read_progress(progress)
        if kind == "exit":
            # pytest's own status covers this boot; failures of earlier boots count too.
            earlier = [n for n in failed if n in done]
            if value == 5 and done:  # everything was deselected: nothing left to run
                value = 0
            if wedged:
                print("vm-tests: the outer guest wedged " + str(sum(wedged.values())) +
                      " time(s) in this stage, during: " + ", ".join(wedged) +
                      " (each rerun in a fresh outer guest)", flush=True)
            if earlier and value == 0:
                print("vm-tests: failed before a wedge: " + ", ".join(earlier), flush=True)
                return 1
            return value
        if kind == "error":
            print(f"vm-tests: nested stage failed: {value}", flush=True)
            return 1
        running = [n for n in started if n not in done]
        test = running[-1] if running else "(outside any test)"
        wedged[test] = wedged.get(test, 0) + 1
        why = value if isinstance(value, str) else f"no heartbeat for {value} s"
        print(f"\nvm-tests: the outer guest WEDGED ({why}) while running "
              f"{test}: QEMU's TCG SVM emulation, not a test result", flush=True)
        if wedged[test] > 1 or sum(wedged.values()) > MAX_WEDGES:
            print(f"vm-tests: nested stage failed: the outer guest wedged "
                  f"{sum(wedged.values())} times ({', '.join(wedged)}); giving up", flush=True)
            return 1
        print("vm-tests: booting a fresh outer guest for it and the tests not yet run",
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
