# Sourced by scripts/test: reinstall the extension (scripts/dev-cluster install) while the test
# cluster, which has soniq.so loaded (its control plane), serves producers (pgbench, 2 s runs
# back to back). The install must put a new file in place (a new inode), never rewrite the
# loaded one; no load run may fail, and the control plane must live on.
#   reinstall_under_load LIBRARY PORT SCRATCH_PREFIX
reinstall_under_load() {
    local lib=$1 port=$2 load=$3
    control_plane_pid() { scripts/dev-cluster psql -d soniq_regress -Atc "SELECT pid FROM pg_stat_activity WHERE backend_type = 'soniq control plane'"; }
    local pid_before inode_before inode_after
    # A control plane whose database was just created is restarted by the postmaster a few
    # seconds later: wait for it, or its absence would pass for a death.
    scripts/dev-cluster wait-control-plane
    pid_before=$(control_plane_pid) inode_before=$(stat -c %i "$lib")
    echo "SELECT soniq.enqueue('reinstall.load', '{}');" > "$load.sql"
    (
        while [ ! -e "$load.done" ]; do
            "$SONIQ_PG_BINDIR/pgbench" -n -h localhost -p "$port" -U postgres -c 2 -T 2 -f "$load.sql" \
                soniq_regress >> "$load.log" 2>&1 || echo "a load run failed" >> "$load.failed"
        done
    ) &
    local loader=$!
    scripts/dev-cluster install
    inode_after=$(stat -c %i "$lib")
    sleep 2
    touch "$load.done"
    wait "$loader"
    [ -n "$pid_before" ] || { echo "no control plane was running" >&2; return 1; }
    [ "$inode_after" != "$inode_before" ] || { echo "soniq.so was rewritten in place (inode $inode_before)" >&2; return 1; }
    [ ! -e "$load.failed" ] || { cat "$load.log" >&2; echo "the cluster stopped serving while soniq.so was reinstalled" >&2; return 1; }
    [ "$(control_plane_pid)" = "$pid_before" ] || { echo "the control plane died when soniq.so was reinstalled" >&2; return 1; }
    local enqueued
    enqueued=$(scripts/dev-cluster psql -d soniq_regress -Atc "SELECT count(*) FROM soniq.jobs WHERE task_name = 'reinstall.load'")
    [ "$enqueued" -gt 0 ] || { echo "no load ran during the reinstall" >&2; return 1; }
    echo "reinstall under load: new inode $inode_after, control plane $pid_before still running, $enqueued jobs enqueued meanwhile, no failure"
}
