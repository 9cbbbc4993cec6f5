"""A tiny test harness for the end-to-end suites: check() counts, run() isolates exceptions,
report() prints "<suite>: N passed, N failed" (the line tests/run_tests.sh and CI read) and exits
non-zero on failure. Also the paths every suite needs."""

import os
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
