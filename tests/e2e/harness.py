"""A tiny test harness for the end-to-end suites: check() counts, run() isolates exceptions,
report() prints "<suite>: N passed, N failed" (the line tests/run_tests.sh and CI read) and exits
non-zero on failure. Also the paths every suite needs."""

import json
import os
import shutil
import subprocess
import sys
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
_build = os.environ.get("BUILD", "build")
BUILD = _build if os.path.isabs(_build) else os.path.join(ROOT, _build)
CLARA = os.path.join(BUILD, "clara")
FIXTURES = os.path.join(BUILD, "fixtures")

_passed = 0
_failed = 0


def check(cond, msg):
    global _passed, _failed
    if cond:
        _passed += 1
    else:
        _failed += 1
        print("FAIL:", msg)
    return cond


def run(fn):
    global _failed
    print("case %s" % fn.__name__, flush=True)  # tests/run_tests.sh shows it during long suites
    try:
        fn()
    except Exception:
        _failed += 1
        print("FAIL: %s raised:" % fn.__name__)
        traceback.print_exc(file=sys.stdout)


def report(suite):
    print("%s: %d passed, %d failed" % (suite, _passed, _failed))
    sys.exit(1 if _failed else 0)


def built_with_vulkan():
    """Whether BUILD was built with the Vulkan backend (the Makefile's stamp says "on")."""
    try:
        with open(os.path.join(BUILD, "gen", "vulkan.stamp")) as f:
            return f.read().strip() == "on"
    except OSError:
        return False


def npm_install(prefix, package, version, tools=("node", "npm")):
    """Installs package@version (pinned) into prefix with npm unless it is there already: the test
    clients the suites drive the server with. A missing tool is an error, never a skip."""
    for tool in tools:
        if not (shutil.which(tool) or os.access(tool, os.X_OK)):
            raise RuntimeError("%s is not installed: this suite needs it (.ci/install-deps "
                               "installs it)" % tool)
    pkg = os.path.join(prefix, "node_modules", package, "package.json")
    if os.path.exists(pkg) and json.load(open(pkg))["version"] == version:
        return
    p = subprocess.run(["npm", "install", "--prefix", prefix, "--save-exact", "--no-audit",
                        "--no-fund", "%s@%s" % (package, version)], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("npm install %s@%s failed:\n%s" % (package, version, p.stderr[-3000:]))
