# Sourced by scripts/test and scripts/test-faults: the test cluster of $SONIQ_PG (15: port 5489,
# /tmp/soniq-test; 18: port 5499, /tmp/soniq-test-18) whose control plane serves database
# soniq_e2e with short timeouts, so tests see rescues and schedules within seconds. The
# development cluster is left alone.
. scripts/lib/pg.sh
. scripts/lib/pgbouncer.sh
case "$SONIQ_PG" in
    15) default_port=5489 default_dir=/tmp/soniq-test ;;
    18) default_port=5499 default_dir=/tmp/soniq-test-18 ;;
esac
export SONIQ_DEV_DIR=${SONIQ_TEST_DIR:-$default_dir}
export SONIQ_DEV_PORT=${SONIQ_TEST_PORT:-$default_port}
export SONIQ_DEV_DB=soniq_e2e
export SONIQ_DEV_SETTINGS="soniq.tick_interval = 2s
soniq.heartbeat_timeout = 2s
soniq.lease_grace = 1s"

# A fresh soniq_e2e served by the control plane, and PgBouncer in front of it; exports what
# the end-to-end tests read.
fresh_e2e_database() {
    scripts/dev-cluster fresh-db soniq_e2e >/dev/null   # the control plane restarts into it
    scripts/dev-cluster wait-control-plane
    export SONIQ_TEST_DATABASE_URL=$(scripts/dev-cluster url soniq_e2e)
    export SONIQ_TEST_PGDATA=$SONIQ_DEV_DIR/data
    start_pgbouncer
}
