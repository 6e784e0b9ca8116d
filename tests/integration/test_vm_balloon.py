"""virtio-balloon (docs/vm.md, Memory balloon): `vm run --balloon`, the API's /balloon and
/balloon/statistics, and `vm balloon NAME [SIZE] [--stats]`.

The guest is the multiboot test kernel's test=balloon (tests/guests/balloon.h): it touches a
64 MiB pool at 16 MiB, follows num_pages with inflate and deflate requests as Linux's driver
does (printing "balloon: actual N" when it reaches the target), answers statistics requests,
reports a free region in 2 MiB blocks (report=MiB) and, with bad=1, names PFNs outside RAM.
The host side is measured where it matters: the Rss of the guest RAM mapping in
/proc/PID/smaps and the VMM's total in smaps_rollup."""
import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import KAPSEL
from test_vm_api import call

BUILD = os.path.dirname(os.path.dirname(os.path.dirname(KAPSEL)))
GUESTS = os.environ.get("KAPSEL_GUESTS", os.path.join(BUILD, "tests", "guests"))
MULTIBOOT = os.path.join(GUESTS, "multiboot.elf")
MIB = 1 << 20
MEM_MIB = 128
RESIDENT = ("Rss", "Shared_Hugetlb", "Private_Hugetlb")

pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="needs /dev/kvm"),
]


def kap(root, *args, timeout=60):
    return subprocess.run([KAPSEL, "--root", str(root), *args], capture_output=True,
                          text=True, timeout=timeout)


def wait_for(pred, timeout=60, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class VM:
    def __init__(self, root, tmp_path, name, cmdline, *extra, transport="mmio"):
        if not os.path.exists(MULTIBOOT):
            pytest.fail(f"test kernel {MULTIBOOT} missing: build with meson/ninja first")
        self.root, self.name = root, name
        self.console = tmp_path / f"console-{name}.txt"
        self.proc = subprocess.Popen(
            [KAPSEL, "--root", str(root), "vm", "run", "--name", name, "--kernel", MULTIBOOT,
             "--cmdline", cmdline + (" transport=pci" if transport == "pci" else ""),
             "--mem", f"{MEM_MIB}M", "--transport", transport,
             "--console", f"file:{self.console}", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.sock = str(root / "vm" / name / "api.sock")

    def text(self):
        try:
            return self.console.read_text()
        except FileNotFoundError:
            return ""

    def wait_line(self, line, count=1, timeout=120):
        def seen():
            assert self.proc.poll() is None, (self.text(), self.proc.communicate())
            assert "FAIL" not in self.text(), self.text()
            return self.text().count(line + "\n") >= count
        wait_for(seen, timeout, what=f"{line!r} on the guest's console")

    def ram_rss(self):
        """Resident bytes of the guest RAM mapping (the one mapping of exactly MEM_MIB):
        Rss, plus the hugetlbfs pages smaps counts apart from it."""
        maps = []
        with open(f"/proc/{self.proc.pid}/smaps") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):
                    maps.append({"Size": 0, "resident": 0})
                elif key == "Size":
                    maps[-1]["Size"] = int(rest.split()[0])
                elif key in RESIDENT:
                    maps[-1]["resident"] += int(rest.split()[0]) * 1024
        ram = [m["resident"] for m in maps if m["Size"] == MEM_MIB * 1024]
        assert len(ram) == 1, maps
        return ram[0]

    def memfd_bytes(self):
        """Bytes allocated to the guest RAM memfd (--mem-shared, --mem-hugepages): a page
        only unmapped (MADV_DONTNEED on shared memory) would still count here."""
        fds = f"/proc/{self.proc.pid}/fd"
        for fd in os.listdir(fds):
            try:
                if os.readlink(f"{fds}/{fd}").startswith("/memfd:kapsel-guest-ram"):
                    return os.stat(f"{fds}/{fd}").st_blocks * 512
            except FileNotFoundError:
                continue
        raise AssertionError("no guest RAM memfd")

    def total_rss(self):
        with open(f"/proc/{self.proc.pid}/smaps_rollup") as f:
            text = f.read()
        return sum(int(n) * 1024 for k, n in re.findall(r"^(\w+):\s+(\d+) kB", text, re.M)
                   if k in RESIDENT)

    def end(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.communicate()


@pytest.fixture
def vms(tmp_path):
    root = tmp_path / "root"
    started = []

    def start(name, cmdline, *extra, **kw):
        v = VM(root, tmp_path, name, cmdline, *extra, **kw)
        started.append(v)
        return v
    yield root, start
    for v in started:
        v.end()


def hugepages_free():
    with open("/proc/meminfo") as f:
        return int(re.search(r"^HugePages_Free:\s+(\d+)", f.read(), re.M).group(1))


@pytest.mark.parametrize("transport,backing", [
    ("mmio", None), ("pci", None), ("mmio", "--mem-shared"), ("pci", "--mem-hugepages")])
def test_inflate_returns_memory_deflate_and_statistics(vms, transport, backing, accel=()):
    """The RAM mapping's Rss drops by what the guest inflates (MADV_DONTNEED; MADV_REMOVE for
    the shared memfd and for hugetlbfs, whole 2 MiB pages) and by what it reports free."""
    if backing == "--mem-hugepages" and hugepages_free() < MEM_MIB // 2:
        pytest.skip(f"needs {MEM_MIB // 2} free 2 MiB huge pages (HugePages_Free is "
                    f"{hugepages_free()}; the tests never reserve them)")
    root, start = vms
    v = start("bal", "test=balloon pool=64 report=16",
              "--balloon", "stats_interval_s=1,free_page_reporting=on",
              *([backing] if backing else []), *accel, transport=transport)
    v.wait_line("balloon: ready")
    v.wait_line("balloon: reported 16 MiB")
    v.wait_line("balloon: actual 0")
    # The guest touched 64 + 16 MiB and reported the 16 as free: only the pool stays.
    start_rss = v.ram_rss()
    assert start_rss < (64 + 10) * MIB, f"reported pages still resident: {start_rss >> 20} MiB"
    assert start_rss > 60 * MIB, f"the pool is not resident: {start_rss >> 20} MiB"
    total_before = v.total_rss()
    if backing:
        memfd_before = v.memfd_bytes()
        assert memfd_before < (64 + 10) * MIB, f"reported pages still allocated: {memfd_before}"

    r = kap(root, "vm", "balloon", "bal", "48")
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r
    v.wait_line("balloon: actual 12288")
    inflated = v.ram_rss()
    assert start_rss - inflated >= 44 * MIB, (start_rss >> 20, inflated >> 20)
    assert total_before - v.total_rss() >= 40 * MIB, (total_before >> 20, v.total_rss() >> 20)
    if backing:
        assert memfd_before - v.memfd_bytes() >= 44 * MIB, (memfd_before, v.memfd_bytes())

    status, b = call(v.sock, "GET", "/balloon")
    assert status == 200 and b == {"amount_mib": 48, "deflate_on_oom": False,
                                   "stats_polling_interval_s": 1, "free_page_reporting": True}
    r = kap(root, "vm", "balloon", "bal")
    assert r.returncode == 0 and json.loads(r.stdout) == b, r

    # Statistics: the guest answers each poll with fresh numbers (minor_faults counts them).
    def stats():
        s, d = call(v.sock, "GET", "/balloon/statistics")
        assert s == 200, d
        return d if d["actual_mib"] == 48 and d.get("minor_faults", 0) >= 2 else None
    st = wait_for(stats, 30, what="statistics after the inflation")
    assert st["target_pages"] == 12288 and st["actual_pages"] == 12288
    assert st["target_mib"] == 48 and st["total_memory"] == MEM_MIB * MIB
    assert st["free_memory"] == 16 * MIB and st["swap_in"] == 0
    assert st["inflated_pages_total"] == 12288 and st["reported_pages_total"] == 4096
    assert "major_faults" not in st  # the guest did not send it
    r = kap(root, "vm", "balloon", "bal", "--stats")
    assert r.returncode == 0 and json.loads(r.stdout)["total_memory"] == MEM_MIB * MIB, r
    assert call(v.sock, "PATCH", "/balloon/statistics", {"stats_polling_interval_s": 2})[0] == 204
    assert call(v.sock, "GET", "/balloon")[1]["stats_polling_interval_s"] == 2
    r = kap(root, "vm", "balloon", "bal", "--stats-interval", "3")
    assert r.returncode == 0, r
    assert call(v.sock, "GET", "/balloon")[1]["stats_polling_interval_s"] == 3
    r = kap(root, "vm", "balloon", "bal", "--stats-interval", "0")
    assert r.returncode == 1 and "cannot be turned off" in r.stderr, r
    r = kap(root, "vm", "balloon", "bal", "--stats-interval", "1")
    assert r.returncode == 0, r

    # Deflate through the API: the guest takes its pages back and touches them again.
    assert call(v.sock, "PATCH", "/balloon", {"amount_mib": 0}) == (204, None)
    v.wait_line("balloon: actual 0", count=2)
    assert v.ram_rss() - inflated >= 44 * MIB, (inflated >> 20, v.ram_rss() >> 20)
    wait_for(lambda: call(v.sock, "GET", "/balloon/statistics")[1]["actual_pages"] == 0, 30,
             what="actual 0 in the statistics")
    v.end()
    assert v.proc.returncode == 128 + signal.SIGTERM


def test_hostile_pfns_and_vm_json(vms, tmp_path):
    """PFNs outside RAM are skipped and logged once; the device keeps working. The balloon
    comes from vm.json, with an initial target the guest meets at boot."""
    root, start = vms
    cfg = tmp_path / "vm.json"
    cfg.write_text(json.dumps({"balloon": {"amount_mib": 8, "stats_interval_s": 1}}))
    v = start("bad", "test=balloon pool=64 bad=1", "--config", str(cfg))
    v.wait_line("balloon: bad pfns sent")
    v.wait_line("balloon: actual 2048")
    assert call(v.sock, "PATCH", "/balloon", {"amount_mib": 16})[0] == 204
    v.wait_line("balloon: actual 4096")
    st = wait_for(lambda: (lambda d: d if d["actual_pages"] == 4096 else None)(
        call(v.sock, "GET", "/balloon/statistics")[1]), 30, what="statistics")
    assert st["ignored_pfns_total"] == 3 and st["inflated_pages_total"] == 4096
    assert call(v.sock, "GET", "/balloon")[1] == {
        "amount_mib": 16, "deflate_on_oom": False, "stats_polling_interval_s": 1,
        "free_page_reporting": False}
    _, err = v.end()
    assert v.proc.returncode == 128 + signal.SIGTERM, err
    assert err.count("outside guest RAM") == 1, err
    assert "3 PFNs outside guest RAM" in err, err


def test_api_and_cli_refusals(vms):
    root, start = vms
    v = start("ref", "test=balloon pool=8", "--balloon", "on")
    plain = start("plain", "test=spin")
    v.wait_line("balloon: actual 0")
    s = v.sock
    cases = [
        (("PATCH", "/balloon", None), 400, "needs a JSON body"),
        (("PATCH", "/balloon", b"{"), 400, "request body"),
        (("PATCH", "/balloon", {"amount_mib": 8, "deflate": True}), 400,
         'unknown field "deflate"'),
        (("PATCH", "/balloon", {"amount_mib": "8"}), 400, "amount_mib: expected an integer"),
        (("PATCH", "/balloon", {"amount_mib": -1}), 400, "amount_mib: expected an integer"),
        (("PATCH", "/balloon", {"amount_mib": 1.5}), 400, "amount_mib: expected an integer"),
        (("PATCH", "/balloon", {"amount_mib": MEM_MIB + 1}), 400, "more than guest RAM"),
        (("PATCH", "/balloon", [8]), 400, "expected an object"),
        (("GET", "/balloon/statistics", None), 400, "statistics are not enabled"),
        (("PATCH", "/balloon/statistics", {"stats_polling_interval_s": 5}), 400,
         "cannot be turned on"),
        (("PATCH", "/balloon/statistics", {"interval": 5}), 400, 'unknown field "interval"'),
        (("DELETE", "/balloon", None), 405, "method not allowed"),
        (("PUT", "/balloon/statistics", {"stats_polling_interval_s": 1}), 405,
         "method not allowed"),
    ]
    for (method, target, body), want, msg in cases:
        status, d = call(s, method, target, body)
        assert status == want and msg in d["fault_message"], (method, target, body, d)
    # Nothing was applied.
    assert call(s, "GET", "/balloon")[1]["amount_mib"] == 0
    # A VM without a balloon.
    plain_sock = plain.sock
    wait_for(lambda: os.path.exists(plain_sock), what="the second VM's socket")
    for method, target, body in (("GET", "/balloon", None),
                                 ("PATCH", "/balloon", {"amount_mib": 8}),
                                 ("GET", "/balloon/statistics", None)):
        status, d = call(plain_sock, method, target, body)
        assert status == 400 and "no balloon device" in d["fault_message"], d
    # The CLI: one line naming the VM and the reason.
    r = kap(root, "vm", "balloon", "plain", "8")
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r
    assert "vm balloon plain: " in r.stderr and "no balloon device" in r.stderr, r
    r = kap(root, "vm", "balloon", "ref", "1G")
    assert r.returncode == 1 and "more than guest RAM (128 MiB)" in r.stderr, r
    r = kap(root, "vm", "balloon", "ref", "eight")
    assert r.returncode == 1 and 'SIZE: expected MiB' in r.stderr and '"eight"' in r.stderr, r
    r = kap(root, "vm", "balloon", "ghost", "8")
    assert r.returncode == 1 and r.stderr.strip() == "kapsel: vm ghost: no such VM", r
    # The VMs survived all of it, and the balloon still works.
    r = kap(root, "vm", "balloon", "ref", "4M")
    assert r.returncode == 0, r
    v.wait_line("balloon: actual 1024")
    assert plain.proc.poll() is None


@pytest.mark.parametrize("opt,msg", [
    ("amount_mib=x", 'amount_mib: expected a number of MiB, got "x"'),
    ("amount_mib=512", "amount_mib=512: more than guest RAM (128 MiB)"),
    ("stats_interval_s=-1", "stats_interval_s: expected 0 to 86400 seconds"),
    ("deflate_on_oom=yes", 'bad option "deflate_on_oom=yes"'),
    ("size=8", 'bad option "size=8"'),
])
def test_run_refuses_bad_balloon_options(tmp_path, opt, msg):
    r = kap(tmp_path / "root", "vm", "run", "--kernel", MULTIBOOT, "--mem", f"{MEM_MIB}M",
            "--balloon", opt, "--console", "none")
    assert r.returncode == 1 and msg in r.stderr and len(r.stderr.splitlines()) == 1, r


@pytest.mark.parametrize("balloon,msg", [
    ({"bogus": 1}, "balloon.bogus: unknown setting"),
    ({"amount_mib": "8"}, "balloon.amount_mib"),
    ({"deflate_on_oom": 1}, "balloon.deflate_on_oom"),
    ([], "balloon"),
])
def test_vm_json_refuses_bad_balloon(tmp_path, balloon, msg):
    cfg = tmp_path / "vm.json"
    cfg.write_text(json.dumps({"kernel": MULTIBOOT, "balloon": balloon}))
    r = kap(tmp_path / "root", "vm", "run", "--config", str(cfg), "--console", "none")
    assert r.returncode == 1 and msg in r.stderr and len(r.stderr.splitlines()) == 1, r
