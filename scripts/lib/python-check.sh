# Sourced by scripts/test: python_check runs the Python package's checks (python/): mypy
# --strict on its code and the pytest suite against the test cluster of $SONIQ_PG
# (scripts/lib/test-cluster.sh; SONIQ_TEST_DIR and SONIQ_TEST_PORT point it at another
# cluster), on a fresh soniq_e2e. The interop tests run the Rust runner: SONIQ_RUST_BIN,
# default target/debug/soniq (built by the runner's tests, which run before). Needs the venv
# scripts/setup creates (SONIQ_PYVENV, default /opt/soniq/pyvenv).
python_check() (
    . scripts/lib/test-cluster.sh
    local venv=${SONIQ_PYVENV:-/opt/soniq/pyvenv}
    if [ ! -x "$venv/bin/pytest" ]; then
        echo "python_check: no Python venv at $venv; run scripts/setup" >&2
        return 1
    fi
    export SONIQ_RUST_BIN=${SONIQ_RUST_BIN:-$PWD/target/debug/soniq}
    echo "== PostgreSQL $SONIQ_PG: Python package (mypy --strict, pytest)"
    (cd python && "$venv/bin/mypy")
    fresh_e2e_database
    PYTHONPATH=$PWD/python/src:$PWD/python/tests "$venv/bin/pytest" -q -p no:cacheprovider python/tests
)
