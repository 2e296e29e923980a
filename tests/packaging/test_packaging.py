#!/usr/bin/env python3
"""Packaging tests: make install/uninstall, make deb, the tools' command
lines, dedupstat's live files, and the README's deployment recipes.

Run by `make test-packaging` (part of `make test`), from the repository:

    python3 tests/packaging/test_packaging.py [-v] [TestClass.test_name ...]

Needs build/libdedup.so (`make lib`). The Debian package tests install and
remove the package, so they run as root only (as CI does), and are skipped
if a libdedup package is installed already. Every test cleans up after
itself, also when it fails.
"""
import glob
import json
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import fcntl

REPO = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEDUP_RUN = os.path.join(REPO, "scripts", "dedup-run")
DEDUPSTAT = os.path.join(REPO, "scripts", "dedupstat")
DUP_DATA = os.path.join(REPO, "tests", "packaging", "dup_data.py")
IS_ROOT = os.geteuid() == 0


def makefile_version():
    with open(os.path.join(REPO, "Makefile")) as f:
        m = re.search(r"^VERSION\s*:?=\s*(\S+)", f.read(), re.M)
    return m.group(1)


VERSION = makefile_version()


def multiarch():
    return subprocess.run(["gcc", "-print-multiarch"], capture_output=True, text=True).stdout.strip() \
        or "x86_64-linux-gnu"


def run(cmd, timeout=120, **kw):
    if "input" not in kw:
        kw.setdefault("stdin", subprocess.DEVNULL)  # CI has no stdin
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(cmd, timeout=timeout, **kw)


def make(*args, timeout=600):
    # Not the outer make's jobserver: its descriptors do not reach us.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return run(["make", "-C", REPO, "--no-print-directory"] + list(args), timeout=timeout, env=env)


def describe(r):
    return "exit %s\n--- stdout\n%s\n--- stderr\n%s" % (r.returncode, r.stdout, r.stderr)


def library_variables():
    """The DEDUP_* names of the options table in scanner/config.cpp."""
    with open(os.path.join(REPO, "scanner", "config.cpp")) as f:
        names = re.findall(r'OPT(?:_ENUM)?\("(DEDUP_[A-Z_]+)"', f.read())
    assert names, "no OPT(...) entries found in scanner/config.cpp"
    return names


def stats_keys():
    """The keys of the stats JSON: the table DEDUP_REPORT_FIELDS in
    scanner/stats.h, and those scanner/stats.cpp writes itself."""
    with open(os.path.join(REPO, "scanner", "stats.h")) as f:
        keys = re.findall(r"^\s*X\((\w+), (?:COUNTED|DERIVED),", f.read(), re.M)
    assert len(keys) > 10, keys
    with open(os.path.join(REPO, "scanner", "stats.cpp")) as f:
        keys += re.findall(r'\\"([a-z_0-9]+)\\": ', f.read())
    return [k for k in dict.fromkeys(keys) if k not in ("bytes", "site")]


def readme_block(marker):
    """The fenced block after `<!-- test: MARKER ...-->` in README.md."""
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    m = re.search(r"<!-- test: %s\b.*?-->\s*```[a-z]*\n(.*?)```" % re.escape(marker), text, re.S)
    assert m, "README.md has no block marked <!-- test: %s -->" % marker
    return m.group(1)


def run_dup_data(dedup_run, tmp, extra=(), env=None):
    """Runs dup_data.py under dedup_run; returns (CompletedProcess, stats dict, log text)."""
    stats, log = os.path.join(tmp, "stats.json"), os.path.join(tmp, "dedup.log")
    r = run([dedup_run, "--sleep-ms", "0", "--interval-ms", "100", "--stats", stats, "--log", log]
            + list(extra) + ["--", sys.executable, DUP_DATA], timeout=120, env=env)
    try:
        with open(stats) as f:
            st = json.load(f)
    except (OSError, ValueError):
        st = {}
    try:
        with open(log) as f:
            text = f.read()
    except OSError:
        text = ""
    return r, st, text


def assert_merged(tc, r, st, log):
    tc.assertEqual(r.returncode, 0, describe(r) + "\n--- log\n" + log)
    tc.assertIn("merged pages_sharing=", r.stdout)
    # At exit: the pages were shared at peak (8 copies of 4 MiB: 28 MiB saved).
    tc.assertGreaterEqual(st.get("bytes_saved_peak", 0), 16 << 20, json.dumps(st) + "\n" + log)


# ----------------------------------------------------------------------------

class DedupRunCommandLine(unittest.TestCase):

    def test_help_goes_to_stdout_and_exits_0(self):
        r = run([DEDUP_RUN, "--help"])
        self.assertEqual(r.returncode, 0, describe(r))
        self.assertEqual(r.stderr, "")
        self.assertIn("Usage: dedup-run", r.stdout)
        for var in library_variables():
            self.assertIn(var, r.stdout, "dedup-run --help does not mention " + var)

    def test_version_is_the_makefiles(self):
        r = run([DEDUP_RUN, "--version"])
        self.assertEqual((r.returncode, r.stdout.strip()), (0, "dedup-run (libdedup) %s" % VERSION), describe(r))

    def test_usage_errors_are_one_line_on_stderr_and_exit_2(self):
        cases = [["--bogus", "true"], ["-x", "true"], ["--scope"], ["--scope", "--", "true"],
                 ["--sleep-ms", "--pages", "3", "true"], ["--sleep-ms", "soon", "true"],
                 ["--min-region", "64X", "true"], ["--scope", "some", "true"], ["--sites=1", "true"],
                 ["--log=", "true"], ["--summary", "loud", "true"], []]
        for args in cases:
            with self.subTest(args=args):
                r = run([DEDUP_RUN] + args)
                self.assertEqual(r.returncode, 2, describe(r))
                self.assertEqual(r.stdout, "")
                self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
                self.assertTrue(r.stderr.startswith("dedup-run: "), r.stderr)

    def test_every_option_sets_its_variable(self):
        opts = {"--disable": ("DEDUP_DISABLE", None, "1"), "--scope": ("DEDUP_SCOPE", "advised", "advised"),
                "--min-region": ("DEDUP_MIN_REGION", "128K", "128K"),
                "--malloc-min": ("DEDUP_MALLOC_MIN", "1M", "1M"),
                "--pages": ("DEDUP_PAGES_TO_SCAN", "100", "100"), "--sleep-ms": ("DEDUP_SLEEP_MS", "7", "7"),
                "--cpu-percent": ("DEDUP_CPU_PERCENT", "5", "5"),
                "--vma-reserve": ("DEDUP_VMA_RESERVE", "1000", "1000"), "--sites": ("DEDUP_SITES", None, "1"),
                "--interval-ms": ("DEDUP_STATS_INTERVAL_MS", "250", "250"),
                "--log": ("DEDUP_LOG", "off", "off"),
                "--stats": ("DEDUP_STATS_FILE", "/nonexistent/s.%p.json", "/nonexistent/s.%p.json"),
                "--summary": ("DEDUP_SUMMARY", "never", "never"),
                "--series": ("DEDUP_SERIES_FILE", "/nonexistent/s.%p.jsonl", "/nonexistent/s.%p.jsonl"),
                "--domain": ("DEDUP_DOMAIN", "web", "web"),
                "--start-min": ("DEDUP_START_MIN", "16M", "16M"),
                "--busy-wait-ms": ("DEDUP_BUSY_WAIT_MS", "250", "250")}
        self.assertEqual(sorted(v[0] for v in opts.values()), sorted(library_variables()),
                         "a variable of scanner/config.cpp has no dedup-run option here (or the reverse)")
        args = []
        for opt, (_, value, _) in opts.items():
            args += [opt] if value is None else [opt, value]
        r = run([DEDUP_RUN, "--disable"] + args + ["--", "env"])  # --disable: env need not be deduplicated
        self.assertEqual(r.returncode, 0, describe(r))
        env = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
        for opt, (var, _, expect) in opts.items():
            self.assertEqual(env.get(var), expect, opt)
        self.assertTrue(env["LD_PRELOAD"].endswith("libdedup.so"), env["LD_PRELOAD"])
        r = run([DEDUP_RUN, "--disable", "env"])  # the program may follow the options without --
        self.assertIn("DEDUP_DISABLE=1", r.stdout, describe(r))
        r = run([DEDUP_RUN, "--no-sites", "--scope=all", "--", "env"])
        self.assertIn("DEDUP_SITES=0", r.stdout)
        self.assertIn("DEDUP_SCOPE=all", r.stdout)

    def test_exit_status_and_killing_signal_are_the_programs(self):
        r = run([DEDUP_RUN, "--log", "off", "--", "sh", "-c", "exit 7"])
        self.assertEqual(r.returncode, 7, describe(r))
        # dedup-run exec's the program: the process we started is the one killed.
        r = run([DEDUP_RUN, "--log", "off", "--", "sh", "-c", "kill -TERM $$"])
        self.assertEqual(r.returncode, -signal.SIGTERM, describe(r))

    def test_missing_library_or_program(self):
        r = run([DEDUP_RUN, "--lib", "/nonexistent/libdedup.so", "--", "true"])
        self.assertEqual(r.returncode, 125, describe(r))
        r = run([DEDUP_RUN, "--", "/nonexistent/program"])
        self.assertEqual(r.returncode, 127, describe(r))


class DedupstatCommandLine(unittest.TestCase):

    def test_help_version_and_usage_errors(self):
        r = run([DEDUPSTAT, "--help"])
        self.assertEqual((r.returncode, r.stderr), (0, ""), describe(r))
        for opt in ("--json", "--prometheus", "--interval", "-w", "--dir", "--set", "--unmerge", "--merge"):
            self.assertIn(opt, r.stdout)
        r = run([DEDUPSTAT, "--version"])
        self.assertEqual((r.returncode, r.stdout.strip()), (0, "dedupstat (libdedup) %s" % VERSION), describe(r))
        for args in (["--bogus"], ["--interval"], ["--interval", "0"], ["--interval", "x"], ["abc"],
                     ["--json", "--prometheus"], ["--set", "sleep_ms=0"], ["1", "--set", "sleep_ms"],
                     ["1", "--set", "Sleep=1"], ["1", "--unmerge", "--merge"], ["1", "--unmerge", "--json"],
                     ["--merge"]):
            with self.subTest(args=args):
                r = run([DEDUPSTAT] + args)
                self.assertEqual(r.returncode, 2, describe(r))
                self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
                self.assertTrue(r.stderr.startswith("dedupstat: "), r.stderr)

    def test_dead_pid_is_an_error(self):
        p = subprocess.Popen(["true"])
        p.wait()
        r = run([DEDUPSTAT, str(p.pid)])
        self.assertEqual(r.returncode, 1, describe(r))
        self.assertIn("no process %d" % p.pid, r.stderr)

    def test_process_not_under_the_shim_is_an_error(self):
        p = subprocess.Popen(["sleep", "30"])
        self.addCleanup(p.wait)
        self.addCleanup(p.kill)
        for args in ([str(p.pid)], ["--json", str(p.pid)]):
            r = run([DEDUPSTAT] + args)
            self.assertEqual(r.returncode, 1, describe(r))
            self.assertIn("not running under libdedup", r.stderr)
            self.assertEqual(r.stdout, "")


HOLD_LOCK = r"""
import fcntl, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 1, 0))
print("locked", flush=True)
sys.stdin.read()
"""


class DedupstatLiveFiles(unittest.TestCase):
    """dedupstat on live files made here, in a directory of their own (--dir):
    both names, locks, stale files, unreadable files."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="dedupstat-test-")
        os.chmod(self.dir, 0o755)
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.ns = os.stat("/proc/self/ns/pid").st_ino
        with open("/proc/sys/kernel/pid_max") as f:
            self.dead = int(f.read()) + 1  # no process can have it
        self.sleeper = subprocess.Popen(["sleep", "60"])
        self.addCleanup(self.sleeper.wait)
        self.addCleanup(self.sleeper.kill)

    def write(self, name, obj, mtime=None):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(json.dumps(obj) + " " * 100)  # the shim pads with spaces
        if mtime is not None:
            os.utime(path, (mtime, mtime))
        return path

    def hold_lock(self, path):
        p = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, path], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        self.addCleanup(p.stdout.close)
        self.addCleanup(p.wait)
        self.addCleanup(p.stdin.close)
        self.assertEqual(p.stdout.readline().strip(), "locked")
        return p

    def dedupstat(self, *args, nobody=False):
        if nobody:
            return run(as_nobody(self.dir, "--dir", self.dir, *args))
        return run([DEDUPSTAT, "--dir", self.dir] + list(args))

    def test_both_names_locks_and_stale_files(self):
        now = time.time()
        counters = {"seconds": 5.0, "bytes_saved": 1 << 20, "pages_sharing": 256, "pages_registered": 512}
        ours = self.write("libdedup.%d.4242.json" % self.ns, dict(counters, pid=4242, comm="ours", pidns=self.ns))
        other = self.write("libdedup.777.4343.json", dict(counters, pid=4343, comm="other-ns", pidns=777))
        unlocked = self.write("libdedup.%d.4444.json" % self.ns, dict(counters, pid=4444, comm="gone", pidns=self.ns))
        dead_here = self.write("libdedup.%d.%d.json" % (self.ns, self.dead),
                               dict(counters, pid=self.dead, comm="locked", pidns=self.ns))
        old_live = self.write("libdedup.%d.json" % self.sleeper.pid, counters)
        old_fresh = self.write("libdedup.%d.json" % self.dead, dict(counters, seconds=1.0), mtime=now - 2)
        old_stale = self.write("libdedup.%d.json" % (self.dead + 1), dict(counters, seconds=1.0), mtime=now - 60)
        # Written through a mapping: mtime from its start, seconds still advancing.
        old_mapped = self.write("libdedup.%d.json" % (self.dead + 2), dict(counters, seconds=58.0), mtime=now - 60)
        holders = [self.hold_lock(p) for p in (ours, other, dead_here)]
        ctls = {p: p[:-len(".json")] + ".ctl" for p in (ours, unlocked)}  # control files go with live files
        for ctl in ctls.values():
            open(ctl, "w").close()

        r = self.dedupstat("--json")
        self.assertEqual(r.returncode, 0, describe(r))
        procs = {(d.get("pidns"), d["pid"]): d for d in json.loads(r.stdout)}
        self.assertEqual(set(procs), {(self.ns, 4242), (777, 4343), (self.ns, self.dead), (None, self.sleeper.pid)})
        self.assertEqual(procs[(self.ns, 4242)]["comm"], "ours")
        self.assertEqual(procs[(None, self.sleeper.pid)]["comm"], "sleep")
        self.assertEqual(procs[(777, 4343)]["bytes_saved"], 1 << 20)
        for path in (ours, other, dead_here, old_live, old_fresh, old_mapped):
            self.assertTrue(os.path.exists(path), path + " must not be removed")
        for path in (unlocked, old_stale, ctls[unlocked]):
            self.assertFalse(os.path.exists(path), path + " is stale and must be removed")
        self.assertTrue(os.path.exists(ctls[ours]))

        r = self.dedupstat()
        self.assertEqual(r.returncode, 0, describe(r))
        self.assertIn("4343@777", r.stdout)
        total = [line for line in r.stdout.splitlines() if line.split()[0] == "TOTAL"]
        self.assertEqual(len(total), 1, r.stdout)
        self.assertEqual(total[0].split()[1:5], ["4", "processes", "4.0", "8.0"], r.stdout)

        # Once its process lets go of the lock, a file is stale.
        holders[0].stdin.close()
        holders[0].wait()
        r = self.dedupstat("--json")
        self.assertEqual(len(json.loads(r.stdout)), 3, describe(r))
        self.assertFalse(os.path.exists(ours))

    def test_domain_column_when_reports_name_a_domain(self):
        def live(pid, **extra):
            d = dict({"seconds": 2.0, "bytes_saved": 1 << 20, "pages_sharing": 256, "pages_registered": 512,
                      "pid": pid, "comm": "p%d" % pid, "pidns": self.ns}, **extra)
            return self.write("libdedup.%d.%d.json" % (self.ns, pid), d)
        paths = [live(5001), live(5002, domain="")]  # "": in no domain
        holders = [self.hold_lock(p) for p in paths]
        r = self.dedupstat()
        self.assertEqual(r.returncode, 0, describe(r))
        self.assertNotIn("DOMAIN", r.stdout, "no domain column without domains")
        paths += [live(5003, domain="web"), live(5004, domain="web"), live(5005, domain="batch")]
        holders += [self.hold_lock(p) for p in paths[2:]]
        r = self.dedupstat()
        self.assertEqual(r.returncode, 0, describe(r))
        lines = r.stdout.splitlines()
        self.assertEqual(lines[0].split()[:3], ["PID", "COMMAND", "DOMAIN"], r.stdout)
        rows = [line.split() for line in lines[1:]]
        # Grouped by domain (those without one last), a total per domain, then the total.
        self.assertEqual([row[0] for row in rows],
                         ["5005", "TOTAL", "5003", "5004", "TOTAL", "5001", "5002", "TOTAL", "TOTAL"], r.stdout)
        # SHARED_MiB (0.0: no domain_pages_saved in these files) comes before SAVED_MiB.
        self.assertEqual(rows[4][:6], ["TOTAL", "2", "processes", "web", "0.0", "2.0"], r.stdout)
        self.assertEqual(rows[-1][:5], ["TOTAL", "5", "processes", "0.0", "5.0"], r.stdout)
        r = self.dedupstat("--prometheus")
        self.assertIn('libdedup_bytes_saved{pid="5003",comm="p5003",pidns="%d",domain="web"} 1048576' % self.ns,
                      r.stdout)
        check_prometheus(self, r.stdout)

    def test_interval_refreshes_until_the_process_is_gone(self):
        path = self.write("libdedup.%d.%d.json" % (self.ns, self.sleeper.pid),
                          {"seconds": 2.0, "pid": self.sleeper.pid, "comm": "sleep", "pidns": self.ns})
        holder = self.hold_lock(path)
        for args in (["--interval", "0.2"], ["-w"]):
            with self.subTest(args=args):
                p = subprocess.Popen([DEDUPSTAT, "--dir", self.dir, "--json"] + args + [str(self.sleeper.pid)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
                try:
                    for _ in range(2):  # one compact JSON document per refresh
                        self.assertEqual(json.loads(p.stdout.readline())["pid"], self.sleeper.pid)
                    if args == ["-w"]:
                        holder.stdin.close()  # the process "exits": its lock goes
                        self.assertEqual(p.wait(timeout=10), 0)
                finally:
                    p.kill()
                    p.wait()
                    p.stdout.close()
        self.assertFalse(os.path.exists(path))

    def test_unreadable_live_file_is_an_error(self):
        path = self.write("libdedup.%d.json" % self.sleeper.pid, {"seconds": 3.0, "bytes_saved": 4096})
        os.chmod(path, 0o600)
        if not IS_ROOT:
            os.chmod(path, 0)  # unreadable for us, then
        for args in ([], ["--json"], ["--prometheus"], [str(self.sleeper.pid)]):
            with self.subTest(args=args):
                r = self.dedupstat(*args, nobody=IS_ROOT)
                self.assertEqual(r.returncode, 1, describe(r))
                self.assertIn("cannot read " + path, r.stderr)
                self.assertNotIn(str(self.sleeper.pid), r.stdout, "no row of zeros for it")
        self.assertTrue(os.path.exists(path))


class DedupstatOnALiveProcess(unittest.TestCase):
    """dedupstat on a real process under the shim, in the real /dev/shm."""

    def test_table_json_prometheus_and_an_unreadable_file(self):
        tmp = tempfile.mkdtemp(prefix="dedupstat-live-")
        self.addCleanup(shutil.rmtree, tmp, True)
        env = dict(os.environ, DEDUP_STATS_FILE=os.path.join(tmp, "stats.json"), DEDUP_STATS_INTERVAL_MS="100",
                   DEDUP_SLEEP_MS="0", DEDUP_LOG=os.path.join(tmp, "log"))
        p = subprocess.Popen([DEDUP_RUN, "--", sys.executable, DUP_DATA, "--hold"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env)
        self.addCleanup(p.stdout.close)
        self.addCleanup(p.wait, 30)
        self.addCleanup(p.stdin.close)
        self.assertIn("merged", p.stdout.readline())
        deadline = time.time() + 15
        while True:  # the live file appears a second after the start
            r = run([DEDUPSTAT, "--json", str(p.pid)])
            if r.returncode == 0 or time.time() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(r.returncode, 0, describe(r))
        j = run([sys.executable, "-m", "json.tool"], input=r.stdout)
        self.assertEqual(j.returncode, 0, describe(j))
        d = json.loads(r.stdout)
        comm = os.path.basename(sys.executable)[:15]
        self.assertEqual((d["pid"], d["comm"]), (p.pid, comm))
        self.assertGreaterEqual(d["pages_sharing"], 4096)

        r = run([DEDUPSTAT, "--json", str(p.pid), str(p.pid)])  # several: an array
        self.assertEqual([x["pid"] for x in json.loads(r.stdout)], [p.pid, p.pid], describe(r))

        r = run([DEDUPSTAT])
        self.assertEqual(r.returncode, 0, describe(r))
        self.assertTrue(any(line.split()[0] == str(p.pid) for line in r.stdout.splitlines()), r.stdout)
        self.assertEqual(r.stdout.splitlines()[-1].split()[0], "TOTAL", r.stdout)

        r = run([DEDUPSTAT, str(p.pid)])
        kv = dict(line.split(":", 1) for line in r.stdout.splitlines())
        self.assertEqual(kv["pid"], str(p.pid))
        self.assertGreaterEqual(int(kv["pages_sharing"]), 4096)

        r = run([DEDUPSTAT, "--prometheus"])
        self.assertEqual(r.returncode, 0, describe(r))
        check_prometheus(self, r.stdout)
        m = re.search(r'^libdedup_bytes_saved\{pid="%d",comm="%s"[^}]*\} (\d+)$' % (p.pid, re.escape(comm)),
                      r.stdout, re.M)
        self.assertTrue(m, r.stdout)
        self.assertGreaterEqual(int(m.group(1)), 16 << 20)

        out = os.path.join(tmp, "libdedup.prom")
        r = run([DEDUPSTAT, "--prometheus", "-o", out, str(p.pid)])
        self.assertEqual(r.returncode, 0, describe(r))
        with open(out) as f:
            check_prometheus(self, f.read())

        # Runtime control: the process answers; another user may not control it.
        r = run([DEDUPSTAT, str(p.pid), "--set", "sleep_ms=5"])
        self.assertEqual((r.returncode, r.stdout.strip()), (0, "%d: sleep_ms=5 (was 0)" % p.pid), describe(r))
        if IS_ROOT:
            r = run(as_nobody(tmp, str(p.pid), "--set", "sleep_ms=0"))
            self.assertEqual(r.returncode, 1, describe(r))
            self.assertIn("only the user of process %d (or root) may control it" % p.pid, r.stderr)

        if IS_ROOT:  # another user may not read a 0600 file of ours: an error, not zeros
            live = [f for f in glob.glob("/dev/shm/libdedup.*%d.json" % p.pid)
                    if re.search(r"libdedup\.(\d+\.)?%d\.json$" % p.pid, f)]
            self.assertEqual(len(live), 1, live)
            os.chmod(live[0], 0o600)
            r = run(as_nobody(tmp, str(p.pid)))
            self.assertEqual(r.returncode, 1, describe(r))
            self.assertIn("cannot read", r.stderr)


def as_nobody(tmp, *args):
    """A command line running dedupstat as user nobody: a copy in tmp (the
    repository may be under a directory nobody cannot enter), by Debian's
    python3 (ours may be, too)."""
    copy = os.path.join(tmp, "dedupstat")
    shutil.copy(DEDUPSTAT, copy)
    os.chmod(tmp, 0o755)
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", python, copy] + list(args)


def check_prometheus(tc, text):
    """node_exporter's textfile format: HELP and TYPE before each family's
    samples, each family once, every sample line well formed."""
    sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? '
                        r'-?[0-9.e+-]+$')
    seen, current = set(), None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split()[2]
            tc.assertNotIn(name, seen, "family %s twice" % name)
            seen.add(name)
            current = name
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            tc.assertEqual(name, current)
            tc.assertIn(kind, ("gauge", "counter"))
            if kind == "counter":
                tc.assertTrue(name.endswith("_total"), name)
        else:
            m = sample.match(line)
            tc.assertTrue(m, "bad sample line: %r" % line)
            tc.assertEqual(m.group(1), current, line)
    tc.assertIn("libdedup_bytes_saved", seen)


class InstallIntoDestdir(unittest.TestCase):

    def test_install_run_and_uninstall(self):
        dest = tempfile.mkdtemp(prefix="libdedup-destdir-")
        self.addCleanup(shutil.rmtree, dest, True)
        r = make("install", "DESTDIR=" + dest, "PREFIX=/usr")
        self.assertEqual(r.returncode, 0, describe(r))
        usr = os.path.join(dest, "usr")
        expected = {
            "usr/lib/libdedup.so.%s" % VERSION, "usr/lib/libdedup.so.1", "usr/lib/libdedup.so",
            "usr/bin/dedup-run", "usr/bin/dedupstat", "usr/share/man/man1/dedup-run.1",
            "usr/share/man/man1/dedupstat.1", "usr/share/man/man7/libdedup.7",
            "usr/share/doc/libdedup/README.md", "usr/share/doc/libdedup/DESIGN.md"}
        self.assertEqual(files_under(dest), expected)
        lib = os.path.join(usr, "lib")
        self.assertEqual(os.readlink(os.path.join(lib, "libdedup.so.1")), "libdedup.so.%s" % VERSION)
        self.assertEqual(os.readlink(os.path.join(lib, "libdedup.so")), "libdedup.so.1")
        dyn = run(["readelf", "-d", os.path.join(lib, "libdedup.so.%s" % VERSION)]).stdout
        self.assertIn("Library soname: [libdedup.so.%s]" % VERSION.split(".")[0], dyn)
        for tool in ("dedup-run", "dedupstat"):
            r = run([os.path.join(usr, "bin", tool), "--version"])
            self.assertEqual(r.stdout.strip(), "%s (libdedup) %s" % (tool, VERSION), describe(r))
        with open(os.path.join(usr, "share/man/man7/libdedup.7")) as f:
            self.assertIn('"libdedup %s"' % VERSION, f.read())

        # The installed dedup-run finds the library beside itself, wherever that is.
        dedup_run = os.path.join(usr, "bin", "dedup-run")
        r = run([dedup_run, "--print-lib"])
        self.assertEqual(r.stdout.strip(), os.path.join(lib, "libdedup.so.1"), describe(r))
        r, st, log = run_dup_data(dedup_run, dest)
        assert_merged(self, r, st, log)
        for f in ("stats.json", "dedup.log"):
            os.unlink(os.path.join(dest, f))

        r = make("uninstall", "DESTDIR=" + dest, "PREFIX=/usr")
        self.assertEqual(r.returncode, 0, describe(r))
        self.assertEqual(files_under(dest), set(), "uninstall must remove every file install put there")
        self.assertFalse(os.path.exists(os.path.join(usr, "share/doc/libdedup")))


def files_under(root):
    out = set()
    for d, dirs, files in os.walk(root):
        for name in files + [x for x in dirs if os.path.islink(os.path.join(d, x))]:
            out.add(os.path.relpath(os.path.join(d, name), root))
    return out


def package_of(path):
    """The package owning a file, under any of its names (symlinks, /lib vs /usr/lib)."""
    names = {path, os.path.realpath(path)}
    for n in list(names):
        names.add(re.sub(r"^/usr/lib/", "/lib/", n))
        names.add(re.sub(r"^/lib/", "/usr/lib/", n))
    for n in sorted(names):
        r = run(["dpkg", "-S", n])
        if r.returncode == 0:
            return r.stdout.split(":")[0]
    return None


def installed(pkg):
    r = run(["dpkg-query", "-W", "-f=${Status}", pkg])
    return "install ok installed" in r.stdout


@unittest.skipUnless(IS_ROOT and shutil.which("dpkg-deb") and shutil.which("apt-get"),
                     "needs root, dpkg and apt (CI has them)")
class DebianPackage(unittest.TestCase):

    def test_build_install_run_remove(self):
        if installed("libdedup"):
            self.skipTest("a libdedup package is installed already; not replacing it")
        r = make("deb")
        self.assertEqual(r.returncode, 0, describe(r))
        arch = run(["dpkg", "--print-architecture"]).stdout.strip()
        deb = os.path.join(REPO, "build", "libdedup_%s_%s.deb" % (VERSION, arch))
        self.assertTrue(os.path.isfile(deb), r.stdout)

        field = lambda f: run(["dpkg-deb", "-f", deb, f]).stdout.strip()
        self.assertEqual(field("Package"), "libdedup")
        self.assertEqual(field("Version"), VERSION)
        self.assertEqual(field("Architecture"), arch)
        depends = [d.split()[0] for d in field("Depends").split(", ")]
        for pkg in ("libc6", "python3"):
            self.assertIn(pkg, depends)
        # The library links libc alone; libunwind is dlopen()ed for DEDUP_SITES=1.
        self.assertNotIn("libstdc++6", depends)
        self.assertIn("libunwind8", field("Recommends"))
        ma = multiarch()
        libpath = "/usr/lib/%s/libdedup.so.%s" % (ma, VERSION)

        x = tempfile.mkdtemp(prefix="libdedup-deb-")
        self.addCleanup(shutil.rmtree, x, True)
        self.assertEqual(run(["dpkg-deb", "-R", deb, x]).returncode, 0)
        contents = files_under(x)
        for f in ("usr/bin/dedup-run", "usr/bin/dedupstat", libpath[1:], "usr/lib/%s/libdedup.so.1" % ma,
                  "usr/share/man/man1/dedup-run.1.gz", "usr/share/man/man1/dedupstat.1.gz",
                  "usr/share/man/man7/libdedup.7.gz", "usr/share/doc/libdedup/copyright",
                  "usr/share/doc/libdedup/changelog.gz", "DEBIAN/md5sums", "DEBIAN/control"):
            self.assertIn(f, contents)
        r = run(["md5sum", "--check", "--quiet", os.path.join(x, "DEBIAN/md5sums")], cwd=x)
        self.assertEqual(r.returncode, 0, describe(r))
        # Every library the package's library needs comes from a package it depends on.
        needed = re.findall(r"\(NEEDED\).*\[(.+)\]", run(["readelf", "-d", os.path.join(x, libpath[1:])]).stdout)
        self.assertNotIn("libunwind.so.8", needed)  # dlopen()ed, for DEDUP_SITES=1 only
        for so in needed:
            path = run(["sh", "-c", "ldconfig -p | awk '$1 == \"%s\" && /%s/ {print $NF; exit}'" % (so, ma)]).stdout.strip()
            owner = package_of(path)
            self.assertIn(owner, depends, "%s (%s, package %r) is not in Depends" % (so, path, owner))

        # Installed with apt (which checks Depends), removed however the test ends.
        self.addCleanup(run, ["dpkg", "--purge", "libdedup"])
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        r = run(["apt-get", "install", "-y", deb], env=env, timeout=300)
        self.assertEqual(r.returncode, 0, describe(r))
        self.assertTrue(installed("libdedup"))
        listed = run(["dpkg", "-L", "libdedup"]).stdout.split()
        r = run(["/usr/bin/dedup-run", "--print-lib"])
        self.assertEqual(r.stdout.strip(), "/usr/lib/%s/libdedup.so.1" % ma, describe(r))
        self.assertIn("libdedup.so.1 ", run(["ldconfig", "-p"]).stdout, "the ldconfig trigger did not run")
        tmp = tempfile.mkdtemp(prefix="libdedup-deb-run-")
        self.addCleanup(shutil.rmtree, tmp, True)
        r, st, log = run_dup_data("/usr/bin/dedup-run", tmp)
        assert_merged(self, r, st, log)
        r = run(["/usr/bin/dedupstat", "--version"])
        self.assertEqual(r.stdout.strip(), "dedupstat (libdedup) %s" % VERSION, describe(r))
        if shutil.which("man"):
            r = run(["man", "-w", "7", "libdedup"])
            self.assertEqual(r.stdout.strip(), "/usr/share/man/man7/libdedup.7.gz", describe(r))

        r = run(["dpkg", "-r", "libdedup"], env=env)
        self.assertEqual(r.returncode, 0, describe(r))
        self.assertFalse(installed("libdedup"))
        left = [f for f in listed if os.path.lexists(f) and not os.path.isdir(f)]
        self.assertEqual(left, [], "dpkg -r left files behind")
        self.assertNotIn("libdedup.so", run(["ldconfig", "-p"]).stdout)


class Documentation(unittest.TestCase):

    def test_every_variable_and_stats_key_is_documented(self):
        with open(os.path.join(REPO, "docs/man/libdedup.7")) as f:
            man7 = f.read()
        with open(os.path.join(REPO, "README.md")) as f:
            readme = f.read()
        with open(os.path.join(REPO, "docs/man/dedup-run.1")) as f:
            man1 = f.read()
        for var in library_variables():
            self.assertRegex(man7, r"(?m)^\.B %s$" % var, "libdedup(7) has no entry for " + var)
            self.assertIn("| `%s` |" % var, readme, "README's Configuration table lacks " + var)
            self.assertIn(var, man1, "dedup-run(1) has no option for " + var)
        for key in stats_keys():
            self.assertRegex(man7, r"\b%s\b" % key.replace("_", r"\\?_"),
                             "libdedup(7) does not explain the stats key " + key)

    def test_man_pages_render_without_warnings(self):
        if not shutil.which("man"):
            self.skipTest("man is not installed")
        r = make("dist")
        self.assertEqual(r.returncode, 0, describe(r))
        for page in ("dedup-run.1", "dedupstat.1", "libdedup.7"):
            r = run(["man", "--warnings", "-l", os.path.join(REPO, "build/dist/man", page)],
                    env=dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8"))
            self.assertEqual((r.returncode, r.stderr), (0, ""), page)
            self.assertIn("libdedup %s" % VERSION, r.stdout)

    def test_systemd_dropin(self):
        dropin = readme_block("systemd-dropin")
        preload = re.search(r"^Environment=LD_PRELOAD=(\S+)$", dropin, re.M)
        self.assertTrue(preload, dropin)
        self.assertEqual(preload.group(1), "/usr/lib/%s/libdedup.so.1" % multiarch())
        for var in re.findall(r"^Environment=(DEDUP_[A-Z_]+)=", dropin, re.M):
            self.assertIn(var, library_variables())
        if not shutil.which("systemd-analyze"):
            self.skipTest("systemd-analyze is not installed")
        d = tempfile.mkdtemp(prefix="libdedup-unit-")
        self.addCleanup(shutil.rmtree, d, True)
        unit = os.path.join(d, "libdedup-readme-test.service")
        with open(unit, "w") as f:
            f.write("[Unit]\nDescription=throwaway unit for the README's drop-in\n\n"
                    "[Service]\nExecStart=/bin/true\n")
        os.mkdir(unit + ".d")
        with open(os.path.join(unit + ".d", "libdedup.conf"), "w") as f:
            f.write(dropin)
        r = run(["systemd-analyze", "verify", unit])
        # verify exits 0 even for unknown keys or values it ignores: any line about the drop-in fails.
        self.assertEqual(r.returncode, 0, describe(r))
        self.assertNotIn("libdedup.conf", r.stdout + r.stderr, describe(r))

    def test_pod_spec(self):
        try:
            import yaml
        except ImportError:
            self.fail("python3-yaml is missing (scripts/install-deps.sh installs it)")
        pod = yaml.safe_load(readme_block("pod-spec"))
        self.assertEqual((pod["apiVersion"], pod["kind"]), ("v1", "Pod"))
        spec = pod["spec"]
        volumes = {v["name"] for v in spec["volumes"]}
        init, = spec["initContainers"]
        app, = spec["containers"]
        for c in (init, app):
            for m in c["volumeMounts"]:
                self.assertIn(m["name"], volumes)
        src, dst = init["command"][-2:]
        self.assertEqual(src, "/usr/lib/%s/libdedup.so.%s" % (multiarch(), VERSION))
        init_mount = init["volumeMounts"][0]
        self.assertEqual(os.path.dirname(dst), init_mount["mountPath"])
        app_mount, = [m for m in app["volumeMounts"] if m["name"] == init_mount["name"]]
        env = {e["name"]: e["value"] for e in app["env"]}
        for name, value in env.items():
            self.assertIsInstance(value, str, "Kubernetes wants env values as strings: " + name)
            if name.startswith("DEDUP_"):
                self.assertIn(name, library_variables())
        self.assertEqual(env["LD_PRELOAD"], os.path.join(app_mount["mountPath"], os.path.basename(dst)))

    def test_docker_run(self):
        args = shlex.split(readme_block("docker-run").replace("\\\n", " "))
        self.assertEqual(args[:2], ["docker", "run"])
        mounts = [args[i + 1] for i, a in enumerate(args) if a == "-v"]
        env = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "-e")
        self.assertEqual(len(mounts), 1, mounts)
        src, dst, mode = mounts[0].split(":")
        self.assertEqual((src, mode), ("/usr/lib/%s/libdedup.so.%s" % (multiarch(), VERSION), "ro"))
        self.assertEqual(env["LD_PRELOAD"], dst)
        for name in env:
            if name.startswith("DEDUP_"):
                self.assertIn(name, library_variables())


if __name__ == "__main__":
    unittest.main()
