# Sourced by scripts/test: PgBouncer (Debian's, 1.18: no protocol-level prepared statements) in
# transaction mode in front of the test cluster of $SONIQ_PG, on port $SONIQ_DEV_PORT + 4;
# exports SONIQ_TEST_PGBOUNCER_URL (the test database through it). It runs as postgres
# (PgBouncer refuses root) and trusts loopback logins as the cluster does.
start_pgbouncer() {
    local dir=/tmp/soniq-pgbouncer-$SONIQ_PG port=$((SONIQ_DEV_PORT + 4))
    stop_pgbouncer
    rm -rf "$dir" && mkdir -p "$dir"
    cat > "$dir/pgbouncer.ini" <<INI
[databases]
* = host=localhost port=$SONIQ_DEV_PORT

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
; Each transaction to the next server connection, not the last used: a statement that
; needs one prepared on an earlier connection fails here, as it would under load.
server_round_robin = 1
max_client_conn = 1000
default_pool_size = 20
server_idle_timeout = 30
logfile = $dir/log
pidfile = $dir/pid
INI
    echo '"postgres" ""' > "$dir/userlist.txt"
    chown -R postgres "$dir"
    sudo -u postgres pgbouncer -d "$dir/pgbouncer.ini"
    local ready=f
    for _ in $(seq 1 50); do
        "$SONIQ_PG_BINDIR/pg_isready" -q -h 127.0.0.1 -p "$port" && { ready=t; break; }
        sleep 0.1
    done
    [ "$ready" = t ] || { echo "pgbouncer did not start:" >&2; cat "$dir/log" >&2; return 1; }
    export SONIQ_TEST_PGBOUNCER_URL="postgres://postgres@127.0.0.1:$port/$SONIQ_DEV_DB"
    echo "pgbouncer (transaction mode) on port $port in front of port $SONIQ_DEV_PORT"
}

stop_pgbouncer() {
    local pidfile=/tmp/soniq-pgbouncer-$SONIQ_PG/pid
    if [ -f "$pidfile" ]; then
        kill "$(cat "$pidfile")" 2>/dev/null || true
        for _ in $(seq 1 50); do [ -f "$pidfile" ] || break; sleep 0.1; done
    fi
}
