# redis-server (jemalloc) on 127.0.0.1, filled over loopback with 2,000 keys
# of one 64 KiB value plus unique ones, held, read back and compared, then
# shut down cleanly. Only the server runs under the shim; the client and
# redis-cli run plain.

REDIS_DUP_KEYS=${REDIS_DUP_KEYS:-2000}
REDIS_DUP_KIB=${REDIS_DUP_KIB:-64}
REDIS_UNIQ_KEYS=${REDIS_UNIQ_KEYS:-200}
REDIS_UNIQ_KIB=${REDIS_UNIQ_KIB:-16}
REDIS_HOLD=${REDIS_HOLD:-5}

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

app_redis() {
    local port pid st i client="$APPS_DIR/redis_client.py"
    local kv="$REDIS_DUP_KEYS $REDIS_DUP_KIB $REDIS_UNIQ_KEYS $REDIS_UNIQ_KIB"
    port=$(free_port)
    under_test redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --daemonize no --dir "$PWD" --logfile "$PWD/redis.log" &
    pid=$!
    for i in $(seq 100); do
        [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && break
        kill -0 $pid 2>/dev/null || break
        sleep 0.2
    done
    if [ "$(redis-cli -p "$port" ping 2>/dev/null)" != PONG ]; then
        kill $pid 2>/dev/null; wait $pid; st=$?
        problem "redis-server did not answer PING on port $port; it ended with $(describe_status $st)"
        cat redis.log
        echo "redis-server exit=$st" >> result
        return 98
    fi
    /usr/bin/python3 "$client" "$port" fill $kv >> result 2>&1 || problem "redis fill failed: $(tail -3 result)"
    sleep "$REDIS_HOLD"
    redis-cli -p "$port" info memory | grep -E '^(used_memory|used_memory_rss|mem_allocator):' | tr -d '\r'
    /usr/bin/python3 "$client" "$port" check $kv >> result 2>&1 || problem "redis check failed: $(tail -3 result)"
    redis-cli -p "$port" shutdown nosave
    wait $pid
    st=$?
    echo "redis-server exit=$st" >> result
    [ $st -eq 0 ] || problem "redis-server exited with $(describe_status $st)"
    cat result
    tail -5 redis.log
    return $st
}

register_redis() {
    register_app redis 300
}
