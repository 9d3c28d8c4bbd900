# Sourced by scripts/test: pg_upgrade from 15 to 18 with Soniq (tests/pg_upgrade.rs), once both
# passes have installed this build. The source is upstream's 15 (scripts/setup), given the
# extension as Debian's 15 has it installed; the target is the 18 the suite tests.
pg_upgrade_15_to_18() {
    local upstream=$SONIQ_PG15_UPSTREAM_ROOT debian_lib debian_share file
    debian_lib=$("$(pg_config_of 15)" --pkglibdir)
    debian_share=$("$(pg_config_of 15)" --sharedir)/extension
    # A new file renamed over the old: a server with the library loaded keeps its copy.
    cp "$debian_lib/soniq.so" "$upstream/lib/postgresql/soniq.so.new.$$"
    mv -f "$upstream/lib/postgresql/soniq.so.new.$$" "$upstream/lib/postgresql/soniq.so"
    for file in "$debian_share"/soniq.control "$debian_share"/soniq--*.sql; do
        cp "$file" "$upstream/share/postgresql/extension/"
    done
    (
        export SONIQ_PG=18
        . scripts/lib/pg.sh
        export SONIQ_PG15_UPSTREAM_BINDIR=$upstream/bin
        cargo test --no-default-features --features "pg18,e2e,pg_upgrade" --test pg_upgrade
    )
}
