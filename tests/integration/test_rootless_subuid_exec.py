"""Rootless `kapsel exec -u` into a container run with the user's /etc/subuid and /etc/subgid
ranges takes the ids inside the ranges, as `run -u` does (the fixtures and the test user are
test_rootless_subuid's)."""
import uuid

import pytest

from test_rootless_subuid import (USER, START, home, image_tar, k, ranges,  # noqa: F401
                                  user)

pytestmark = pytest.mark.rootless


@pytest.fixture
def running(ranges, home, k):
    name = "sub-" + uuid.uuid4().hex[:8]
    r = k("run", "-d", "--name", name, "localhost/subid", "sleep", "1000")
    assert r.returncode == 0, r.stderr
    yield name
    k("rm", "-f", name)


def test_exec_u_inside_the_ranges(k, running):
    r = k("exec", "-u", "1000:1000", running, "sh", "-c", "id -u; id -g; touch /home/u/x")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1000", "1000"], (r.stdout, r.stderr)
    r = k("exec", "-u", "1000", running, "id", "-u")
    assert (r.returncode, r.stdout.strip()) == (0, "1000"), r.stderr
    # a name, with its passwd gid: busybox's nobody is 65534:65534, inside the ranges
    r = k("exec", "-u", "nobody", running, "sh", "-c", "id -u; id -g")
    assert (r.returncode, r.stdout.split()) == (0, ["65534", "65534"]), r.stderr
    r = k("exec", "-u", "0", running, "id", "-u")
    assert (r.returncode, r.stdout.strip()) == (0, "0"), r.stderr


def test_exec_u_beyond_the_ranges_is_an_error(k, running):
    r = k("exec", "-u", "70000", running, "true")
    assert r.returncode == 125, (r.returncode, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "70000" in lines[0], r.stderr
