# A JVM and a Node.js program holding 64 copies of a 4 MiB buffer: both must
# print the same verification line and checksum with and without the shim.

DUP_COPIES=${DUP_COPIES:-64}
DUP_MIB=${DUP_MIB:-4}
DUP_HOLD=${DUP_HOLD:-4}

app_jvm_dup_buffers() {
    local st
    # Compile outside the measured program (javac is not under test here).
    javac -d . "$APPS_DIR/DupBuffers.java" || { problem "javac failed"; return 99; }
    under_test java -Xmx1g -cp . DupBuffers "$DUP_COPIES" "$DUP_MIB" "$DUP_HOLD" > out.txt 2>&1
    st=$?
    cat out.txt
    grep -E '^java: ' out.txt > result
    grep -q 'mismatches=0 ' result || problem "java: verification failed or no result line"
    return $st
}

app_node_dup_buffers() {
    local st
    under_test node "$APPS_DIR/dup_buffers.js" "$DUP_COPIES" "$DUP_MIB" "$DUP_HOLD" > out.txt 2>&1
    st=$?
    cat out.txt
    grep -E '^node: ' out.txt > result
    grep -q 'mismatches=0 ' result || problem "node: verification failed or no result line"
    return $st
}

register_runtimes() {
    register_app jvm_dup_buffers 180
    register_app node_dup_buffers 180
}
