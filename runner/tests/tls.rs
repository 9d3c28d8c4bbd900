//! TLS and passwords as libpq users expect them, against a cluster of its own with `ssl = on`
//! (of SONIQ_TLS_PG_BINDIR: the PostgreSQL 18 we test is built without OpenSSL),
//! a CA made here (openssl), SCRAM logins and one login by client certificate; TCP without
//! TLS is refused by its pg_hba.conf. The runner, the CLI (and the bench, which connects
//! through the same `ConnectionConfig`) read `sslmode`, `sslrootcert`, `sslcert`, `sslkey`,
//! `PGPASSWORD` and the password file.
#![cfg(all(feature = "e2e", feature = "cli"))]

mod common;

use common::*;
use soniq_runner::{ConnectionConfig, JobContext, JobResult, Outcome, Soniq};
use soniq_testkit::cluster::Cluster;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

const PORT: u16 = 5492;
const PASSWORD: &str = "s3cret-Pass";

/// Run openssl; panics with its output unless it succeeds.
fn openssl(dir: &str, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA in `dir` (`<name>.crt`, `<name>.key`).
fn make_ca(dir: &str, name: &str) {
    let (key, crt, subject) = (
        format!("{name}.key"),
        format!("{name}.crt"),
        format!("/CN=soniq test {name}"),
    );
    #[rustfmt::skip]
    openssl(dir, &[
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", &key, "-out", &crt, "-days", "2", "-subj", &subject,
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    ]);
}

/// A certificate for `cn` signed by `ca`, with `extensions` (`<name>.crt`, `<name>.key`).
fn make_certificate(dir: &str, ca: &str, name: &str, cn: &str, extensions: &str) {
    let (key, csr, crt, ext) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
        format!("{name}.ext"),
    );
    std::fs::write(format!("{dir}/{ext}"), extensions).unwrap();
    #[rustfmt::skip]
    openssl(dir, &[
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", &key, "-out", &csr, "-subj", &format!("/CN={cn}"),
    ]);
    #[rustfmt::skip]
    openssl(dir, &[
        "x509", "-req", "-in", &csr, "-CA", &format!("{ca}.crt"), "-CAkey", &format!("{ca}.key"),
        "-CAcreateserial", "-out", &crt, "-days", "2", "-extfile", &ext,
    ]);
    std::fs::set_permissions(
        format!("{dir}/{key}"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

/// The TLS cluster: the server's certificate is valid for `localhost` only; `app` logs in
/// with a SCRAM password, `certuser` with a client certificate; database `shop` has soniq.
fn tls_cluster() -> (Cluster, String) {
    let bindir = std::env::var("SONIQ_TLS_PG_BINDIR").expect(
        "SONIQ_TLS_PG_BINDIR names the programs of a PostgreSQL built with OpenSSL; run scripts/test",
    );
    let cluster = Cluster::init(&bindir, "tls", PORT);
    let certs = format!("{}/certs", cluster.dir);
    std::fs::create_dir_all(&certs).unwrap();
    make_ca(&certs, "ca");
    make_ca(&certs, "other-ca");
    make_certificate(
        &certs,
        "ca",
        "server",
        "localhost",
        "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    );
    make_certificate(
        &certs,
        "ca",
        "client",
        "certuser",
        "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
    );
    let chown = Command::new("chown")
        .args(["-R", "postgres", &certs])
        .status()
        .unwrap();
    assert!(chown.success());
    std::fs::write(
        format!("{}/pg_hba.conf", cluster.data()),
        "local all all trust\n\
         hostssl all certuser 127.0.0.1/32 cert\n\
         hostssl all certuser ::1/128 cert\n\
         hostssl all all 127.0.0.1/32 scram-sha-256\n\
         hostssl all all ::1/128 scram-sha-256\n",
    )
    .unwrap();
    cluster.configure(&[
        "ssl = on".into(),
        format!("ssl_cert_file = '{certs}/server.crt'"),
        format!("ssl_key_file = '{certs}/server.key'"),
        format!("ssl_ca_file = '{certs}/ca.crt'"),
        "password_encryption = 'scram-sha-256'".into(),
    ]);
    cluster.start(&[]);
    let psql = |database: &str, sql: &str| {
        cluster.run(
            "psql",
            &[
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                &cluster.dir,
                "-p",
                &PORT.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ],
        )
    };
    psql(
        "postgres",
        &format!(
            "CREATE ROLE app LOGIN SUPERUSER PASSWORD '{PASSWORD}'; CREATE ROLE certuser LOGIN"
        ),
    );
    psql("postgres", "CREATE DATABASE shop OWNER app");
    psql("shop", "CREATE EXTENSION soniq");
    (cluster, certs)
}

fn url(host: &str, user: &str, options: &str) -> String {
    format!("postgres://{user}@{host}:{PORT}/shop?{options}")
}

/// Whether the connection is encrypted (the server's view), and as whom.
async fn ssl_and_user(config: &ConnectionConfig) -> (bool, String) {
    let client = config.connect().await.unwrap();
    let row = client
        .query_one(
            "SELECT ssl, current_user::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Why connecting fails, as the error says it.
async fn refusal(url: &str) -> String {
    match soniq_runner::cli::connect(url).await {
        Ok(_) => panic!("{url} connected"),
        Err(e) => format!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_checked_as_sslmode_asks_and_logins_use_scram_or_a_certificate() {
    let (_cluster, certs) = tls_cluster();
    let ca = format!("sslrootcert={certs}/ca.crt");
    let login = format!("app:{PASSWORD}");

    // verify-full, the right CA and name: a job runs through the runner over TLS.
    let verified = url("localhost", &login, &format!("sslmode=verify-full&{ca}"));
    let mut soniq = Soniq::with_settings(
        settings(2)
            .to_builder()
            .database_url(&verified)
            .build()
            .unwrap(),
    )
    .unwrap();
    let queue = unique("tls");
    let task = soniq
        .job(format!("{queue}.ping"))
        .queue(&queue)
        .handler(|_: serde_json::Value, _ctx: JobContext| async { JobResult::Ok(Outcome::done()) })
        .unwrap();
    let job = soniq.enqueue(&task, serde_json::json!({})).await.unwrap();
    let report = soniq.run_worker(run_once(&queue)).await.unwrap();
    assert_eq!(report.jobs_run, 1);
    let status = soniq.get_job(job).await.unwrap().unwrap().status;
    assert_eq!(status, soniq_runner::JobStatus::Done);
    let config = ConnectionConfig::parse(&verified).unwrap();
    assert_eq!(ssl_and_user(&config).await, (true, "app".to_string()));

    // verify-full refuses a name the certificate does not carry; verify-ca does not check it.
    let by_address = url("127.0.0.1", &login, &format!("sslmode=verify-full&{ca}"));
    let said = refusal(&by_address).await;
    assert!(said.contains("not valid for name"), "{said}");
    let chain_only = url("127.0.0.1", &login, &format!("sslmode=verify-ca&{ca}"));
    let config = ConnectionConfig::parse(&chain_only).unwrap();
    assert!(ssl_and_user(&config).await.0);

    // A CA that did not sign the server's certificate.
    let other = url(
        "localhost",
        &login,
        &format!("sslmode=verify-full&sslrootcert={certs}/other-ca.crt"),
    );
    let said = refusal(&other).await;
    assert!(said.contains("UnknownIssuer"), "{said}");
    let other_chain = url(
        "127.0.0.1",
        &login,
        &format!("sslmode=verify-ca&sslrootcert={certs}/other-ca.crt"),
    );
    let said = refusal(&other_chain).await;
    assert!(
        said.contains("UnknownIssuer"),
        "verify-ca checks the chain: {said}"
    );

    // require encrypts without checking; disable is refused by this server.
    let unchecked = url("127.0.0.1", &login, "sslmode=require");
    assert!(
        ssl_and_user(&ConnectionConfig::parse(&unchecked).unwrap())
            .await
            .0
    );
    let said = refusal(&url("localhost", &login, "sslmode=disable")).await;
    assert!(said.contains("no encryption"), "{said}");

    // SCRAM with a wrong password says so.
    let said = refusal(&url(
        "localhost",
        "app:wrong",
        &format!("sslmode=verify-full&{ca}"),
    ))
    .await;
    assert!(
        said.contains("password authentication failed for user \"app\""),
        "{said}"
    );

    // A login by client certificate: with it, and refused without.
    let client_cert = format!("sslcert={certs}/client.crt&sslkey={certs}/client.key");
    let by_cert = url(
        "localhost",
        "certuser",
        &format!("sslmode=verify-full&{ca}&{client_cert}"),
    );
    let config = ConnectionConfig::parse(&by_cert).unwrap();
    assert_eq!(ssl_and_user(&config).await, (true, "certuser".to_string()));
    let said = refusal(&url(
        "localhost",
        "certuser",
        &format!("sslmode=verify-full&{ca}"),
    ))
    .await;
    assert!(
        said.contains("requires a valid client certificate"),
        "{said}"
    );

    // The CLI with the password from PGPASSWORD, then from a password file (PGPASSFILE);
    // a password file others may read is ignored, as libpq ignores it.
    let no_password = url("localhost", "app", &format!("sslmode=verify-full&{ca}"));
    let status = |env: &[(&str, &str)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_soniq"));
        command
            .args(["status"])
            .env("SONIQ_DATABASE_URL", &no_password)
            .env("NO_COLOR", "1");
        for inherited in [
            "PGPASSWORD",
            "PGPASSFILE",
            "PGSSLMODE",
            "PGSSLROOTCERT",
            "PGSSLCERT",
            "PGSSLKEY",
        ] {
            command.env_remove(inherited);
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let output = command.output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, stderr) = status(&[("PGPASSWORD", PASSWORD), ("PGPASSFILE", "/nonexistent")]);
    assert!(ok, "{stderr}");
    let passfile = format!("{certs}/pgpass");
    std::fs::write(&passfile, format!("localhost:{PORT}:shop:app:{PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (ok, stderr) = status(&[("PGPASSFILE", &passfile)]);
    assert!(ok, "{stderr}");
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, stderr) = status(&[("PGPASSFILE", &passfile)]);
    assert!(!ok, "a password file others may read was used");
    assert!(
        stderr.contains("has group or world access and is ignored"),
        "{stderr}"
    );
}

#[tokio::test]
async fn require_refuses_a_server_without_tls() {
    let plain = format!("{}?sslmode=require", database_url());
    let said = refusal(&plain).await;
    assert!(said.contains("TLS"), "{said}");
}
