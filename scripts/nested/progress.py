"""pytest plugin for the nested runner (scripts/nested/run.py): writes "START nodeid" when a
test starts, "FAILED nodeid" when any of its phases fails and "DONE nodeid" after its teardown
to $KAPSEL_NESTED_PROGRESS, synced at once, so the host knows which test was running if the
outer guest wedges and which have finished."""
import os

PATH = os.environ.get("KAPSEL_NESTED_PROGRESS")


def _write(line):
    if not PATH:
        return
    with open(PATH, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def pytest_runtest_logstart(nodeid, location):
    _write("START " + nodeid)


def pytest_runtest_logreport(report):
    if report.failed:
        _write("FAILED " + report.nodeid)
    if report.when == "teardown":
        _write("DONE " + report.nodeid)
