"""Shell completion (kapsel completion bash|zsh|fish) and the man pages (kapsel __man, run by
the build): both are written from the command tables the parser uses, so every command and
flag --help shows must be in them. Unprivileged; touches nothing outside tmp_path."""
import os
import re
import shutil
import subprocess

import pytest

EXIT_ENGINE = 125


def run(*args, **kw):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, **kw)


def commands(kapsel):
    """The command names 'kapsel --help' lists (help itself is no page of its own)."""
    out = run(kapsel, "--help").stdout
    names = re.findall(r"^  (\S+)  ", out.split("Commands:\n", 1)[1], re.M)
    assert "run" in names and "network" in names
    return [n for n in names if n != "help"]


def long_flags(text):
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text))


@pytest.fixture(scope="module")
def bash_script(kapsel, tmp_path_factory):
    r = run(kapsel, "completion", "bash")
    assert r.returncode == 0, r.stderr
    path = tmp_path_factory.mktemp("completion") / "kapsel.bash"
    path.write_text(r.stdout)
    return path


def complete_bash(kapsel, script, words):
    """What _kapsel offers for the words typed so far (the last one is being completed)."""
    words = [kapsel] + words
    prog = (f"source {script}\n"
            "COMP_WORDS=(\"$@\"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))\n"
            "_kapsel; printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    r = run("bash", "-c", prog, "bash", *words)
    assert r.returncode == 0, r.stderr
    return [w for w in r.stdout.split("\n") if w]


def test_bash_script_loads(kapsel, bash_script):
    assert run("bash", "-n", str(bash_script)).returncode == 0
    r = run("bash", "-c", f"source {bash_script}; complete -p kapsel")
    assert r.returncode == 0, r.stderr
    assert "-F _kapsel kapsel" in r.stdout


def test_bash_completes_commands_and_flags(kapsel, bash_script):
    assert complete_bash(kapsel, bash_script, ["ru"]) == ["run"]
    assert complete_bash(kapsel, bash_script, ["run", "--memo"]) == ["--memory"]
    # Flags anywhere before the image, and the globals' values skipped.
    assert "--memory" in complete_bash(kapsel, bash_script,
                                       ["--root", "/nonexistent", "run", "-d", "--name", "x",
                                        "--me"])
    # Subcommands come from the commands' own dispatch tables.
    assert complete_bash(kapsel, bash_script, ["network", "cr"]) == ["create"]
    assert complete_bash(kapsel, bash_script, ["vm", "disk", "c"]) == ["create"]
    assert set(complete_bash(kapsel, bash_script, ["system", ""])) == {"df", "prune"}
    assert "--subnet" in complete_bash(kapsel, bash_script, ["network", "create", "--"])
    # After the image, the words are the container's command: no kapsel flags.
    assert complete_bash(kapsel, bash_script, ["run", "busybox", "--me"]) == []
    # The value of a flag is not a command or flag.
    assert complete_bash(kapsel, bash_script, ["run", "--name", "ru"]) == []


def test_bash_completes_every_command_and_flag(kapsel, bash_script):
    """Every command --help lists, and every flag of run --help, completes (one table)."""
    offered = complete_bash(kapsel, bash_script, [""])
    for name in commands(kapsel):
        assert name in offered, name
    run_flags = long_flags(run(kapsel, "run", "--help").stdout)
    offered = set(complete_bash(kapsel, bash_script, ["run", "--"]))
    assert run_flags <= offered, run_flags - offered


def test_bash_completes_network_names(kapsel, bash_script, tmp_path):
    """Names come from kapsel __complete, with the --store typed before the command."""
    store = tmp_path / "store"
    r = run(kapsel, "--store", str(store), "__complete", "networks")
    assert r.returncode == 0, r.stderr
    names = r.stdout.split()
    offered = complete_bash(kapsel, bash_script,
                            ["--store", str(store), "network", "inspect", ""])
    assert offered == names
    assert not (tmp_path / "nonexistent").exists()


def test_complete_helper_rejects_unknown_kind(kapsel):
    r = run(kapsel, "__complete", "secrets")
    assert r.returncode != 0
    assert 'unknown kind "secrets"' in r.stderr
    assert "__complete" not in run(kapsel, "--help").stdout


@pytest.mark.skipif(not shutil.which("zsh"), reason="zsh is not installed")
def test_zsh_script_parses(kapsel, tmp_path):
    r = run(kapsel, "completion", "zsh")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("#compdef kapsel\n")
    path = tmp_path / "_kapsel"
    path.write_text(r.stdout)
    check = run("zsh", "-n", str(path))
    assert check.returncode == 0, check.stderr
    assert "_kapsel_flags[kapsel/run]=" in r.stdout and "--memory" in r.stdout


@pytest.mark.skipif(not shutil.which("fish"), reason="fish is not installed")
def test_fish_script_parses_and_completes(kapsel, tmp_path):
    r = run(kapsel, "completion", "fish")
    assert r.returncode == 0, r.stderr
    path = tmp_path / "kapsel.fish"
    path.write_text(r.stdout)
    check = run("fish", "-n", str(path))
    assert check.returncode == 0, check.stderr
    out = run("fish", "-c", f"source {path}; complete -C 'kapsel run --memo'").stdout
    assert out.startswith("--memory\t")


@pytest.mark.parametrize("args", [["tcsh"], ["powershell"]])
def test_completion_unknown_shell(kapsel, args):
    r = run(kapsel, "completion", *args)
    assert r.returncode == EXIT_ENGINE
    assert r.stdout == ""
    assert f'unknown shell "{args[0]}"' in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_completion_needs_a_shell(kapsel):
    r = run(kapsel, "completion")
    assert r.returncode == EXIT_ENGINE
    assert "requires exactly 1 argument" in r.stderr


# The man pages the build wrote next to the binary (src/kapsel/man1, by meson's custom_target).
def man_dir(kapsel):
    d = os.path.join(os.path.dirname(kapsel), "man1")
    if not os.path.isdir(d):
        pytest.fail(f"{d}: no man pages: build with meson/ninja first")
    return d


def test_man_page_per_command(kapsel):
    d = man_dir(kapsel)
    pages = ["kapsel.1"] + [f"kapsel-{n}.1" for n in commands(kapsel)]
    pages += ["kapsel-network-create.1", "kapsel-vm-disk-create.1", "kapsel-system-df.1"]
    for page in pages:
        assert os.path.isfile(os.path.join(d, page)), page
    stamp = open(os.path.join(os.path.dirname(kapsel), "man1.stamp")).read().split()
    assert sorted(stamp) == sorted(p for p in os.listdir(d) if p.endswith(".1"))


@pytest.mark.skipif(not shutil.which("groff"), reason="groff is not installed")
def test_man_pages_render_without_warnings(kapsel):
    d = man_dir(kapsel)
    for page in sorted(os.listdir(d)):
        r = run("groff", "-man", "-ww", "-z", os.path.join(d, page))
        assert r.returncode == 0 and r.stderr == "", (page, r.stderr)


def test_man_run_lists_every_flag(kapsel):
    text = open(os.path.join(man_dir(kapsel), "kapsel-run.1")).read().replace("\\-", "-")
    for flag in long_flags(run(kapsel, "run", "--help").stdout):
        assert re.search(r"\\fB" + re.escape(flag) + r"\\fR", text), flag
    assert ".SH EXIT STATUS" in text and ".SH SEE ALSO" in text
    assert "kapsel-run \\- " in text.replace("kapsel-run -", "kapsel-run \\-")


def test_man_generator_rejects_bad_dir(kapsel, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = run(kapsel, "__man", str(blocker / "man1"), str(tmp_path / "stamp"))
    assert r.returncode != 0
    assert str(blocker / "man1") in r.stderr
    assert not (tmp_path / "stamp").exists()


def test_meson_install_installs_man_pages(kapsel, tmp_path):
    """meson install copies the generated pages into mandir/man1 (under a DESTDIR here)."""
    build = os.path.dirname(os.path.dirname(os.path.dirname(kapsel)))
    info = os.path.join(build, "meson-info", "intro-buildoptions.json")
    if not os.path.isfile(info) or not shutil.which("meson"):
        pytest.skip(f"{build} is not a meson build directory")
    options = {o["name"]: o["value"] for o in __import__("json").load(open(info))}
    dest = tmp_path / "dest"
    r = run("meson", "install", "-C", build, "--no-rebuild", "--destdir", str(dest))
    assert r.returncode == 0, r.stdout + r.stderr
    man1 = os.path.join(str(dest) + options["prefix"], options["mandir"], "man1")
    installed = sorted(os.listdir(man1))
    assert "kapsel-run.1" in installed and "kapsel.1" in installed
    assert installed == sorted(p for p in os.listdir(man_dir(kapsel)) if p.endswith(".1"))
