#!/usr/bin/python3
"""Per-module and per-test-case results of a CPython regrtest run.

regrtest_results.py OUT_TXT JUNIT_XML
    prints one line per module ("module test_os passed") and one per test
    case that did not pass ("case test.test_os.X.test_y failure").
regrtest_results.py --compare PLAIN_RESULT SHIM_RESULT
    prints what failed with the shim but not without it; exits 1 if any.
"""
import re
import sys
import xml.etree.ElementTree as ET

PROGRESS = re.compile(r"\[\s*\d+/\d+(?:/\d+)?\] (test_\w+) (passed|failed|crashed|timed out|skipped|"
                      r"run no tests|resource denied|interrupted|\w+)")


def collect(out_txt, junit):
    modules = {}
    with open(out_txt, errors="replace") as f:
        for line in f:
            m = PROGRESS.search(line)
            if m:
                modules[m.group(1)] = m.group(2).replace(" ", "_")
    cases = {}
    try:
        root = ET.parse(junit).getroot()
        for tc in root.iter("testcase"):
            state = "ok"
            for child in tc:
                if child.tag in ("failure", "error"):
                    state = child.tag
            if state != "ok":
                cases[tc.get("name")] = state
    except (OSError, ET.ParseError) as e:
        modules["junit-xml"] = "unreadable(%s)" % type(e).__name__
    for m in sorted(modules):
        print("module %s %s" % (m, modules[m]))
    for c in sorted(cases):
        print("case %s %s" % (c, cases[c]))


def load(path):
    mods, cases = {}, {}
    with open(path) as f:
        for line in f:
            kind, name, state = line.split()
            (mods if kind == "module" else cases)[name] = state
    return mods, cases


def compare(plain, shim):
    pm, pc = load(plain)
    sm, sc = load(shim)
    bad = []
    for m, s in sorted(sm.items()):
        if s not in ("passed", "skipped") and s != pm.get(m):
            bad.append("module %s: %s with the shim, %s without" % (m, s, pm.get(m, "not run")))
    for m, s in sorted(pm.items()):
        if m not in sm:
            bad.append("module %s: no result with the shim (%s without)" % (m, s))
    for c, s in sorted(sc.items()):
        if c not in pc:
            bad.append("test case %s: %s with the shim, passed without" % (c, s))
    both = sorted(m for m, s in pm.items() if s not in ("passed", "skipped") and sm.get(m) == s)
    if both:
        print("note: failing without the shim too (ignored): " + " ".join(both))
    for b in bad:
        print(b)
    return 1 if bad else 0


if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    collect(sys.argv[1], sys.argv[2])
