# CPython's own regression tests (Debian's libpython3.11-testsuite), run by
# Debian's /usr/bin/python3 with and without the shim. A test module or test
# case that fails with the shim but passes without it is a failure of the
# library; one that fails both ways is reported and ignored.

PY_TESTS=${PY_TESTS:-"test_mmap test_threading test_subprocess test_signal test_os test_faulthandler test_gc test_array test_bytes test_io test_multiprocessing_fork"}
PY_JOBS=${PY_JOBS:-2}

app_python_regrtest() {
    local st
    # -j: each test module in its own worker process (a crash is contained
    # and reported as such); --timeout: a hung module is killed and reported.
    under_test /usr/bin/python3 -m test -j"$PY_JOBS" --timeout 900 \
        --junit-xml "$PWD/junit.xml" $PY_TESTS > out.txt 2>&1
    st=$?
    tail -30 out.txt
    /usr/bin/python3 "$APPS_DIR/regrtest_results.py" out.txt junit.xml > result
    return $st
}

compare_python_regrtest() {
    /usr/bin/python3 "$APPS_DIR/regrtest_results.py" --compare "$1/result" "$2/result"
}

register_python_regrtest() {
    register_app python_regrtest 1500 1   # DEDUP_SLEEP_MS=1: hundreds of short-lived processes
}
