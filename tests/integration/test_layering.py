"""The library's layers (docs/DESIGN.md): core/ and oci/ sit below the engines, so they include
nothing of container/, image/, net/, vmm/ or build/, nor the public headers of those engines.
A source check, not a behaviour test: it fails the moment a lower layer reaches up."""
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIB = os.path.join(REPO, "src", "libkapsel")
ENGINES = ("container", "image", "net", "vmm", "build")
PUBLIC_ENGINE_HEADERS = ("container.h", "run.h", "image.h", "vm.h", "network.h", "build.h",
                         "volume.h", "registry.h")
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.M)


def includes(layer):
    d = os.path.join(LIB, layer)
    for f in sorted(os.listdir(d)):
        if f.endswith((".c", ".h")):
            with open(os.path.join(d, f)) as fh:
                for inc in INCLUDE.findall(fh.read()):
                    yield f"{layer}/{f}", inc


@pytest.mark.parametrize("layer", ["core", "oci"])
def test_lower_layers_include_nothing_from_above(layer):
    bad = [(f, inc) for f, inc in includes(layer)
           if inc.split("/")[0] in ENGINES or
           (inc.startswith("kapsel/") and inc[len("kapsel/"):] in PUBLIC_ENGINE_HEADERS)]
    assert bad == [], f"{layer}/ reaches up: {bad}"


def test_the_check_sees_includes():
    # guards the check itself: core/ does include things (so an empty scan cannot pass)
    assert any(inc == "kapsel/error.h" for _, inc in includes("core"))
