# stress-ng memory stressors with --verify, with and without the shim.
# stress-ng checks its own memory patterns (--verify) and exits nonzero on
# any detected error; the case also rejects any "fail"/"error" line and a
# missing "successful run completed". Bogo-op counts are timing, so the
# comparable result is only the verdict.

STRESS_SECONDS=${STRESS_SECONDS:-6}

stress_ng_run() {   # ARGS...: one stress-ng run in the current mode
    local st
    under_test stress-ng "$@" --timeout "${STRESS_SECONDS}s" --metrics-brief > out.txt 2>&1
    st=$?
    cat out.txt
    if [ $st -ne 0 ]; then problem "stress-ng $* exited with $(describe_status $st)"; fi
    if grep -qiE 'fail|error|corrupt|mismatch' out.txt; then
        problem "stress-ng $* reported: $(grep -iE 'fail|error|corrupt|mismatch' out.txt | head -5)"
    fi
    grep -q 'successful run completed' out.txt || problem "stress-ng $*: no 'successful run completed' line"
    echo "stress-ng exit=$st verdict=$(grep -o '[a-z]*successful run completed' out.txt | head -1)" > result
    return $st
}

app_stress_vm_flip()         { stress_ng_run --vm 2 --vm-method flip --verify; }
app_stress_vm_zero_one()     { stress_ng_run --vm 2 --vm-keep --vm-method zero-one --verify; }
app_stress_vm_walk_1d()      { stress_ng_run --vm 2 --vm-keep --vm-method walk-1d --verify; }
app_stress_vm_prime_incdec() { stress_ng_run --vm 2 --vm-keep --vm-method prime-incdec --verify; }
app_stress_vm_rowhammer()    { stress_ng_run --vm 2 --vm-keep --vm-method rowhammer --verify; }
app_stress_vm_all()          { stress_ng_run --vm 2 --vm-keep --vm-method all --verify; }
app_stress_mmap()            { stress_ng_run --mmap 2 --mmap-bytes 64M --verify; }
app_stress_mremap()          { stress_ng_run --mremap 1 --mremap-bytes 64M --verify; }
app_stress_malloc()          { stress_ng_run --malloc 2 --malloc-bytes 64M --malloc-thresh 65536 --verify; }

register_stress_ng() {
    local t=$((STRESS_SECONDS * 4 + 30)) c
    for c in vm_flip vm_zero_one vm_walk_1d vm_prime_incdec vm_rowhammer vm_all mmap mremap malloc; do
        register_app "stress_$c" "$t"
    done
}
