# Sourced by scripts/test: the install archive of $SONIQ_PG (scripts/package) installed with its
# install.sh, then a fresh cluster of that version with soniq preloaded, serving a database
# still at the previous release (as a server is after a package upgrade), takes the upgrade:
# the control plane waits, saying why, until ALTER EXTENSION soniq UPDATE; then it serves, and
# a job runs through the updated extension.
install_archive_into_a_fresh_cluster() {
    local archive unpacked dir=/tmp/soniq-install-$SONIQ_PG port=$((SONIQ_DEV_PORT + 5))
    archive=$(scripts/package "$SONIQ_PG" | tail -1)
    unpacked=$(mktemp -d)
    tar -C "$unpacked" -xzf "$archive"
    PG_CONFIG=$PG_CONFIG "$unpacked"/soniq-*/install.sh
    # What the previous package left: the install script of the version the database has.
    local previous
    previous=$(ls sql/previous/soniq--*.sql | sort -V | tail -1)
    cp "$previous" "$("$PG_CONFIG" --sharedir)/extension/"
    previous=$(basename "$previous" .sql) previous=${previous#soniq--}
    rm -rf "$unpacked" "$dir" && mkdir -p "$dir" && chown postgres "$dir"
    sudo -u postgres "$SONIQ_PG_BINDIR/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    printf "shared_preload_libraries = 'soniq'\nsoniq.database_name = 'shop'\n" >> "$dir/data/postgresql.conf"
    sudo -u postgres "$SONIQ_PG_BINDIR/pg_ctl" -D "$dir/data" -w -l "$dir/log" \
        -o "-p $port -k $dir -c listen_addresses=localhost" start >/dev/null
    local psql="$SONIQ_PG_BINDIR/psql -X -q -v ON_ERROR_STOP=1 -h localhost -p $port -U postgres"
    $psql -d postgres -c "CREATE DATABASE shop"
    $psql -d shop -c "CREATE EXTENSION soniq VERSION '$previous'"
    local waited=f
    for _ in $(seq 1 50); do
        grep -q "has extension soniq $previous, this library is .*: waiting for ALTER EXTENSION soniq UPDATE" "$dir/log" &&
            { waited=t; break; }
        sleep 0.2
    done
    local outcome
    outcome=$($psql -d shop -At <<'SQL'
ALTER EXTENSION soniq UPDATE;
SELECT soniq.enqueue('shop.ship', '{"order": 1}') AS job \gset
SELECT soniq.register_worker(task_names => '{shop.ship}') AS w \gset
SELECT count(soniq.complete(c.id, :'w', c.attempt, '{"shipped": true}')) FROM soniq.claim(:'w') c;
SELECT status || ' ' || (SELECT extversion FROM pg_extension WHERE extname = 'soniq') FROM soniq.job_status(:'job');
SQL
)
    local alive=f
    for _ in $(seq 1 50); do
        alive=$($psql -d shop -At -c "SELECT alive FROM soniq.health WHERE subsystem = 'control_plane'")
        [ "$alive" = t ] && break
        sleep 0.2
    done
    sudo -u postgres "$SONIQ_PG_BINDIR/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    rm -rf "$dir"
    [ "$outcome" = "$(printf '1\ndone %s' "$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)")" ] ||
        { echo "the installed extension did not run the job: $outcome" >&2; return 1; }
    [ "$waited" = t ] || { echo "the control plane did not say it waits for the update from $previous" >&2; return 1; }
    [ "$alive" = t ] || { echo "the installed control plane did not start after the update" >&2; return 1; }
    echo "install archive $(basename "$archive"): installed; the control plane waited for the update from $previous, then served; a job ran"
}
