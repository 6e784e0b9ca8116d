"""Overcommit through the balloon (issue 15, item 5): two VMs whose RAM together exceeds the
memory they may use both run, because the first one's balloon gives memory back.

"The host's memory" is a memory cgroup the test makes (cgroup v1's memory controller, or
cgroup2 with memory enabled), limited to what the first VM uses plus 128 MiB; the second VM
needs more than that headroom (its 128 MiB pool plus the VMM). The guests are the multiboot
test kernel's test=balloon: each touches its pool, says "balloon: ready", then follows the
balloon's target. Nothing outside the test's own cgroup is changed; it is removed after."""
import os
import signal
import subprocess
import time
import uuid

import pytest

from conftest import KAPSEL
from test_vm_balloon import MULTIBOOT, wait_for

pytestmark = [
    pytest.mark.kvm,
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm"),
]

VM_MIB = 192
POOL_MIB = 128
HEADROOM = 128 << 20


class MemCgroup:
    """A memory cgroup of the test's own: v1 (usage_in_bytes, limit_in_bytes, and memsw so
    that swap cannot stand in for the limit) or v2 (memory.current, memory.max, swap.max)."""

    def __init__(self):
        name = "kapsel-test-overcommit-" + uuid.uuid4().hex[:8]
        v1 = "/sys/fs/cgroup/memory"
        v2 = "/sys/fs/cgroup"
        if os.path.exists(os.path.join(v1, "memory.limit_in_bytes")):
            self.v2, self.path = False, os.path.join(v1, name)
        elif "memory" in open(os.path.join(v2, "cgroup.subtree_control")).read().split() \
                if os.path.exists(os.path.join(v2, "cgroup.subtree_control")) else False:
            self.v2, self.path = True, os.path.join(v2, name)
        else:
            pytest.skip("no memory cgroup here (neither cgroup v1's memory controller nor "
                        "cgroup2 with memory in the root's subtree_control)")
        os.mkdir(self.path)

    def _f(self, v1, v2):
        return os.path.join(self.path, v2 if self.v2 else v1)

    def usage(self):
        with open(self._f("memory.usage_in_bytes", "memory.current")) as f:
            return int(f.read())

    def limit(self, n):
        if self.v2:
            with open(self._f("", "memory.max"), "w") as f:
                f.write(str(n))
            if os.path.exists(self._f("", "memory.swap.max")):
                with open(self._f("", "memory.swap.max"), "w") as f:
                    f.write("0")
            return
        with open(self._f("memory.limit_in_bytes", ""), "w") as f:
            f.write(str(n))
        if os.path.exists(self._f("memory.memsw.limit_in_bytes", "")):
            with open(self._f("memory.memsw.limit_in_bytes", ""), "w") as f:
                f.write(str(n))

    def oom_kills(self):
        name = "memory.events" if self.v2 else "memory.oom_control"
        with open(self._f(name, name)) as f:
            for line in f:
                k, _, v = line.partition(" ")
                if k == "oom_kill":
                    return int(v)
        return 0

    def enter(self):
        with open(os.path.join(self.path, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))

    def remove(self):
        for _ in range(100):
            try:
                os.rmdir(self.path)
                return
            except OSError:
                time.sleep(0.05)


def start(root, tmp_path, name, cg):
    console = tmp_path / f"console-{name}.txt"
    p = subprocess.Popen([KAPSEL, "--root", str(root), "vm", "run", "--name", name, "--kernel",
                          MULTIBOOT, "--mem", f"{VM_MIB}M", "--transport", "mmio", "--balloon",
                          "on", "--console", f"file:{console}", "--cmdline",
                          f"test=balloon pool={POOL_MIB}"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=cg.enter)
    return p, console


def ready(p, console, line):
    assert p.poll() is None, (p.returncode, p.communicate())
    return console.exists() and line + "\n" in console.read_text()


def test_two_vms_above_the_limit_run_when_the_balloon_gives_back(tmp_path):
    if not os.path.exists(MULTIBOOT):
        pytest.fail(f"test kernel {MULTIBOOT} missing: build with meson/ninja first")
    cg = MemCgroup()
    root = tmp_path / "root"
    procs = []
    try:
        a, ca = start(root, tmp_path, "a", cg)
        procs.append(a)
        wait_for(lambda: ready(a, ca, "balloon: ready"), 120, "VM a's pool")
        used_a = cg.usage()
        # "the host": what a uses now plus 128 MiB, less than a second such VM needs
        cg.limit(used_a + HEADROOM)
        assert used_a > HEADROOM, f"VM a uses {used_a >> 20} MiB: too little to show anything"
        # a gives 120 of its 128 MiB back: inflate, then wait for the guest's actual
        r = subprocess.run([KAPSEL, "--root", str(root), "vm", "balloon", "a", "120"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: ready(a, ca, f"balloon: actual {120 * 256}"), 120, "a's inflate")
        freed = used_a - cg.usage()
        assert freed >= 100 << 20, f"the balloon gave back only {freed >> 20} MiB"
        # b needs more than the headroom alone: it runs now, within the limit
        b, cb = start(root, tmp_path, "b", cg)
        procs.append(b)
        wait_for(lambda: ready(b, cb, "balloon: ready"), 120, "VM b's pool")
        total = cg.usage()
        assert total <= used_a + HEADROOM
        assert total - (used_a - freed) > HEADROOM, \
            f"b uses {(total - used_a + freed) >> 20} MiB: not more than the headroom"
        assert a.poll() is None and b.poll() is None
        print(f"used_a {used_a >> 20} MiB freed {freed >> 20} MiB total {total >> 20} MiB "
              f"limit {(used_a + HEADROOM) >> 20} MiB")
        assert cg.oom_kills() == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            try:
                p.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
        cg.remove()
