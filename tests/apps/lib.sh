# libdedup "real programs" suite: the harness, sourced by scripts/test-apps.
#
# Every program is a case NAME, written as a shell function
#
#     app_NAME MODE DIR
#
# MODE is "plain" or "shim"; DIR is an empty directory for this run. The case
# runs its program(s) through `under_test CMD ARGS...`, which adds the
# environment of the mode (nothing for plain; LD_PRELOAD plus the DEDUP_*
# variables for shim) and a time limit. It writes whatever must be identical
# in both modes to DIR/result, may append lines describing outright
# misbehaviour (a verify failure, a crash) to DIR/problems, and returns the
# program's exit status.
#
# The case passes when, in shim mode, the exit status and DIR/result are the
# same as in plain mode and DIR/problems is empty (and plain mode had no
# problems either). A case may replace the comparison with its own function
#
#     compare_NAME PLAIN_DIR SHIM_DIR    (prints reasons, returns nonzero on failure)
#
# Cases are registered with `register_app NAME TIMEOUT_SECONDS [SLEEP_MS]`;
# TIMEOUT_SECONDS bounds each under_test command, SLEEP_MS is the shim's
# DEDUP_SLEEP_MS (default 0, full-speed scanning).

APPS_CASES=()
declare -A APPS_TIMEOUT APPS_SLEEP_MS
APPS_PASSED=0
APPS_FAILED=0
APPS_FAILED_NAMES=()

register_app() {
    APPS_CASES+=("$1")
    APPS_TIMEOUT[$1]=$2
    APPS_SLEEP_MS[$1]=${3:-0}
}

# Set by run_mode for the duration of one case run.
RUN_ENV=()
RUN_TIMEOUT=600
RUN_DIR=

# under_test CMD ARGS...: run CMD in the current mode, bounded in time.
# A command that overruns is killed (TERM, then KILL 10 s later) and its
# status is 124 (or 137), which the comparison then reports.
under_test() {
    # timeout itself stays outside the shim; env execs CMD with the variables.
    timeout -k 10 "$RUN_TIMEOUT" env -u LD_PRELOAD "${RUN_ENV[@]}" "$@"
}

# problem TEXT: record an outright misbehaviour of this run.
problem() {
    printf '%s\n' "$*" >> "$RUN_DIR/problems"
}

# describe_status N: "exit 3" or "killed by SIGSEGV (core dumped?)".
describe_status() {
    local s=$1
    if [ "$s" -eq 124 ]; then echo "timed out (status 124)"
    elif [ "$s" -gt 128 ] && [ "$s" -lt 160 ]; then echo "killed by SIG$(kill -l $((s - 128)) 2>/dev/null) (status $s)"
    else echo "exit $s"; fi
}

now() { date +%s.%N; }

# descends_from PID ROOT: is PID a descendant of ROOT?
descends_from() {
    local p=$1 n=0 st
    while [ "$p" -gt 1 ] && [ $n -lt 64 ]; do
        [ "$p" = "$2" ] && return 0
        st=$(cat "/proc/$p/stat" 2>/dev/null) || return 1
        st=${st##*) }            # after "(comm) ": state ppid ...
        p=${st#* }; p=${p%% *}
        n=$((n + 1))
    done
    return 1
}

# live_sampler DIR: while a shim run is going on, copy the shim's live stats
# (/dev/shm/libdedup.PID.json, rewritten every second by each process) of
# every process of this run to DIR/live.PID.json. A process of the run is a
# descendant of this script (one case runs at a time) or has this run's
# DEDUP_STATS_FILE in its environment. A process that ends with _exit()
# (stress-ng's workers, multiprocessing children) writes no stats file; its
# last live copy counts.
live_sampler() {
    local dir=$1 f pid
    while :; do
        for f in /dev/shm/libdedup.*.json; do
            [ -e "$f" ] || continue
            pid=${f%.json}; pid=${pid##*.}   # libdedup.<pidns>.<pid>.json
            [ -d "/proc/$pid" ] || continue
            if descends_from "$pid" "$$" ||
               tr '\0' '\n' 2>/dev/null < "/proc/$pid/environ" | grep -qxF "DEDUP_STATS_FILE=$dir/stats.%p.json"; then
                cp "$f" "$dir/live.$pid.json.tmp" 2>/dev/null && mv "$dir/live.$pid.json.tmp" "$dir/live.$pid.json"
            fi
        done
        sleep 0.5
    done
}
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# case_sleep_ms NAME: the DEDUP_SLEEP_MS the shim runs the case with.
case_sleep_ms() {
    if [ "${APPS_DEFAULTS:-0}" = 1 ]; then echo default; else echo "${APPS_SLEEP_MS[$1]}"; fi
}

# run_mode NAME MODE DIR: one run of one case; writes DIR/status and DIR/seconds.
run_mode() {
    local name=$1 mode=$2 dir=$3 t0 t1 st
    mkdir -p "$dir"
    chmod 1777 "$dir"   # children that drop privileges (setuid tests) still write stats and log
    : > "$dir/result"
    RUN_DIR=$dir
    RUN_TIMEOUT=${APPS_TIMEOUT[$name]}
    if [ "$mode" = shim ]; then
        # APPS_DEFAULTS=1: default settings, as a user would start it (a stats
        # file costs every process a report at exit, so there is none and no
        # saving is reported); the log only moves the summary off stderr.
        RUN_ENV=(LD_PRELOAD="$APPS_LIB" DEDUP_LOG="$dir/dedup.log")
        [ "${APPS_DEFAULTS:-0}" = 1 ] ||
            RUN_ENV+=(DEDUP_SLEEP_MS="${APPS_SLEEP_MS[$name]}" DEDUP_STATS_FILE="$dir/stats.%p.json")
    else
        RUN_ENV=()
    fi
    local sampler=
    if [ "$mode" = shim ]; then
        live_sampler "$dir" &
        sampler=$!
    fi
    t0=$(now)
    # Core files (core_pattern "core": in the crashing process's directory)
    # let a failure report carry a backtrace; the size cap keeps disks safe.
    ( ulimit -c 4194304 2>/dev/null; cd "$dir" && "app_$name" "$mode" "$dir" ) > "$dir/case.out" 2>&1
    st=$?
    t1=$(now)
    [ -n "$sampler" ] && { kill "$sampler"; wait "$sampler"; } 2>/dev/null
    echo "$st" > "$dir/status"
    elapsed "$t0" "$t1" > "$dir/seconds"
    RUN_ENV=()
}

# backtraces DIR: a gdb backtrace of every core file left under DIR.
backtraces() {
    local core exe
    command -v gdb > /dev/null || return 0
    find "$1" -type f \( -name core -o -name 'core.[0-9]*' \) 2>/dev/null | head -3 | while read -r core; do
        exe=$(gdb -batch -c "$core" 2>/dev/null | sed -n "s/^Core was generated by \`\([^ ']*\).*/\1/p" | head -1)
        exe=$(command -v "$exe" 2>/dev/null || echo "$exe")
        echo "core $core (from $exe):"
        gdb -batch -ex 'set pagination off' -ex 'thread apply all bt 20' "$exe" "$core" 2>&1 \
            | grep -vE '^(warning|\[New LWP|\[Thread debugging|Using host libthread_db|$)' | head -60
    done
}

# default_compare PLAIN_DIR SHIM_DIR
default_compare() {
    local p=$1 s=$2 ps ss rc=0
    ps=$(cat "$p/status"); ss=$(cat "$s/status")
    if [ "$ps" != "$ss" ]; then
        echo "exit status differs: without shim $(describe_status "$ps"), with shim $(describe_status "$ss")"
        rc=1
    fi
    if ! cmp -s "$p/result" "$s/result"; then
        echo "output differs (diff without-shim with-shim):"
        diff "$p/result" "$s/result" | head -20 | sed 's/^/    /'
        rc=1
    fi
    return $rc
}

# stats_summary DIR: prints "saved_peak_mib cow_breaks pages_sharing nstats nlive"
# summed over every process of the run: its stats file (written at exit) or,
# for a process that wrote none, its last live snapshot.
stats_summary() {
    /usr/bin/python3 - "$1" <<'EOF'
import glob, json, os, re, sys
peak = cow = sharing = nstats = nlive = 0
files = {}
for f in glob.glob(sys.argv[1] + "/live.*.json") + glob.glob(sys.argv[1] + "/stats.*.json"):
    m = re.search(r"\.(\d+)\.json$", f)
    if m:
        files[m.group(1)] = f          # stats.PID.json replaces live.PID.json
for pid, f in files.items():
    try:
        with open(f) as fh:
            s = json.load(fh)
    except (OSError, ValueError):
        continue
    if os.path.basename(f).startswith("live."):
        nlive += 1
    else:
        nstats += 1
    peak += s.get("bytes_saved_peak", 0)
    cow += s.get("cow_breaks", 0)
    sharing += s.get("pages_sharing", 0)
print("%.1f %d %d %d %d" % (peak / 1048576.0, cow, sharing, nstats, nlive))
EOF
}

# run_case NAME: both runs, the comparison, the report line.
run_case() {
    local name=$1 base="$APPS_WORK/$1" t0 t1 reasons rc=0 st
    rm -rf "$base"
    mkdir -p "$base"
    t0=$(now)
    run_mode "$name" plain "$base/plain"
    run_mode "$name" shim "$base/shim"
    t1=$(now)

    if declare -F "compare_$name" > /dev/null; then
        reasons=$("compare_$name" "$base/plain" "$base/shim" 2>&1) || rc=1
    else
        reasons=$(default_compare "$base/plain" "$base/shim" 2>&1) || rc=1
    fi
    if [ -s "$base/shim/problems" ]; then
        rc=1
        reasons+=$'\n'"with shim: $(head -20 "$base/shim/problems")"
    fi
    if [ -s "$base/plain/problems" ]; then
        rc=1
        reasons+=$'\n'"WITHOUT the shim (test environment, not the library): $(head -20 "$base/plain/problems")"
    fi
    st=$(cat "$base/shim/status")
    if [ "$st" -gt 128 ] && [ "$st" -lt 160 ] || [ "$st" -eq 124 ]; then
        [ "$(cat "$base/plain/status")" = "$st" ] || reasons+=$'\n'"with shim: $(describe_status "$st")"
    fi

    read -r peak cow sharing nstats nlive < <(stats_summary "$base/shim")
    local result=pass
    if [ $rc -ne 0 ]; then
        result=fail
        APPS_FAILED=$((APPS_FAILED + 1))
        APPS_FAILED_NAMES+=("$name")
    else
        APPS_PASSED=$((APPS_PASSED + 1))
    fi
    echo "app: $name result=$result saved_peak_mib=$peak cow_breaks=$cow seconds=$(elapsed "$t0" "$t1")" \
         "pages_sharing=$sharing stats_files=$nstats live_only=$nlive plain_s=$(cat "$base/plain/seconds") shim_s=$(cat "$base/shim/seconds")" \
         "sleep_ms=$(case_sleep_ms "$name")"
    if [ $rc -ne 0 ]; then
        printf '%s\n' "$reasons" | sed '/^$/d; s/^/    /'
        echo "    logs: $base/{plain,shim}/ (case.out, result, dedup.log, stats.*.json)"
        backtraces "$base/shim" > "$base/shim/backtraces.txt"
        if [ -s "$base/shim/backtraces.txt" ]; then
            echo "    backtraces ($base/shim/backtraces.txt):"
            head -40 "$base/shim/backtraces.txt" | sed 's/^/      /'
        fi
        if [ -s "$base/shim/dedup.log" ]; then
            echo "    dedup.log (last lines):"
            tail -8 "$base/shim/dedup.log" | sed 's/^/      /'
        fi
    else
        [ "${APPS_KEEP:-0}" = 1 ] || rm -rf "$base"
    fi
}

# ensure_packages PKG...: apt-get install only what dpkg says is missing;
# apt-get update at most once per suite run.
APPS_APT_UPDATED=0
ensure_packages() {
    local p missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "test-apps: installing: ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    if [ $APPS_APT_UPDATED = 0 ]; then
        $sudo apt-get update -qq >&2 || return 1
        APPS_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
}
