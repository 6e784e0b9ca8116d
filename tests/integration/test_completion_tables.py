"""The commands that once parsed with option tables of their own (inspect, info, version, volume)
now declare them in their struct cli_command, so shell completion and the man pages see what the
parser takes; and every flag in a table has a help line in its --help. Unprivileged; the only
store used lives in tmp_path."""
import os
import re
import subprocess

import pytest

EXIT_ENGINE = 125


def run(*args, **kw):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, **kw)


@pytest.fixture(scope="module")
def bash_script(kapsel, tmp_path_factory):
    r = run(kapsel, "completion", "bash")
    assert r.returncode == 0, r.stderr
    path = tmp_path_factory.mktemp("completion") / "kapsel.bash"
    path.write_text(r.stdout)
    return path


def complete_bash(kapsel, script, words):
    """What _kapsel offers for the words typed so far (the last one is being completed)."""
    prog = (f"source {script}\n"
            "COMP_WORDS=(\"$@\"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))\n"
            "_kapsel; printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    r = run("bash", "-c", prog, "bash", kapsel, *words)
    assert r.returncode == 0, r.stderr
    return [w for w in r.stdout.split("\n") if w]


def test_volume_completes_its_subcommands(kapsel, bash_script):
    offered = complete_bash(kapsel, bash_script, ["volume", ""])
    assert {"create", "ls", "inspect", "rm", "prune"} <= set(offered), offered
    assert complete_bash(kapsel, bash_script, ["volume", "pr"]) == ["prune"]
    # Each subcommand's own flags, from the table its parser reads.
    assert complete_bash(kapsel, bash_script, ["volume", "ls", "--fo"]) == ["--format"]
    assert complete_bash(kapsel, bash_script, ["volume", "rm", "--f"]) == ["--force"]
    assert complete_bash(kapsel, bash_script, ["volume", "create", "--f"]) == []


def test_inspect_info_version_complete_their_flags(kapsel, bash_script):
    offered = complete_bash(kapsel, bash_script, ["inspect", "--"])
    assert {"--format", "--type"} <= set(offered), offered
    for cmd in ("info", "version"):
        assert complete_bash(kapsel, bash_script, [cmd, "--fo"]) == ["--format"], cmd
    # The value of --type is not a name or a flag.
    assert complete_bash(kapsel, bash_script, ["inspect", "--type", "--"]) == []


def test_volume_names_complete(kapsel, bash_script, tmp_path):
    """volume rm and inspect complete the store's volume names, from kapsel __complete."""
    store = str(tmp_path / "store")
    for name in ("alpha", "beta"):
        r = run(kapsel, "--store", store, "volume", "create", name)
        assert r.returncode == 0, r.stderr
    r = run(kapsel, "--store", store, "__complete", "volumes")
    assert (r.returncode, r.stdout) == (0, "alpha\nbeta\n"), r.stderr
    for sub in ("rm", "inspect"):
        offered = complete_bash(kapsel, bash_script, ["--store", store, "volume", sub, "a"])
        assert offered == ["alpha"], (sub, offered)


def test_man_pages_describe_every_flag(kapsel):
    """No page falls back to the placeholder for a flag its command's --help does not describe."""
    d = os.path.join(os.path.dirname(kapsel), "man1")
    if not os.path.isdir(d):
        pytest.fail(f"{d}: no man pages: build with meson/ninja first")
    pages = sorted(p for p in os.listdir(d) if p.endswith(".1"))
    assert "kapsel-volume-ls.1" in pages and "kapsel-volume-rm.1" in pages
    left = [p for p in pages if "(see SYNOPSIS and DESCRIPTION)" in open(os.path.join(d, p)).read()]
    assert left == []


def test_man_pages_from_a_fresh_run(kapsel, tmp_path):
    """The same check on pages written now by kapsel __man, not only the build's copy."""
    out = tmp_path / "man1"
    r = run(kapsel, "__man", str(out), str(tmp_path / "stamp"))
    assert r.returncode == 0, r.stderr
    for page in sorted(os.listdir(out)):
        text = (out / page).read_text()
        assert "(see SYNOPSIS and DESCRIPTION)" not in text, page
    text = (out / "kapsel-inspect.1").read_text().replace("\\-", "-")
    for flag in ("--format", "--type"):
        assert re.search(r"\\fB" + flag + r"\\fR", text), flag


@pytest.mark.parametrize("args", [["volume", "bogus"], ["volume", "bogus", "x", "-f"]])
def test_volume_unknown_subcommand(kapsel, tmp_path, args):
    r = run(kapsel, "--store", str(tmp_path / "store"), *args)
    assert r.returncode != 0 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert 'unknown subcommand "bogus"' in lines[0] and "kapsel volume --help" in lines[0]
    assert not (tmp_path / "store").exists()


def test_volume_subcommand_errors_name_the_subcommand(kapsel, tmp_path):
    """Each subcommand parses with its own table: a flag another one takes is unknown here."""
    r = run(kapsel, "--store", str(tmp_path / "store"), "volume", "create", "-q")
    assert r.returncode != 0 and r.stdout == ""
    assert "volume create: unknown flag -q" in r.stderr, r.stderr
    r = run(kapsel, "--store", str(tmp_path / "store"), "volume", "inspect")
    assert r.returncode != 0 and "volume inspect: requires" in r.stderr, r.stderr


def test_help_of_converted_commands(kapsel):
    for cmd in (["inspect"], ["info"], ["version"], ["volume", "ls"], ["volume", "rm"]):
        r = run(kapsel, *cmd, "--help")
        assert r.returncode == 0 and r.stdout.startswith("Usage: kapsel"), (cmd, r.stderr)
    r = run(kapsel, "info", "--bogus")
    assert r.returncode == EXIT_ENGINE and "info: unknown flag --bogus" in r.stderr, r.stderr
