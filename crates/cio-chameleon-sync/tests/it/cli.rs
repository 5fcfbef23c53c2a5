//! The executable itself: `config check`, configuration errors, and the `dlq` commands against
//! dead letters made by a running daemon, on both queue backends.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use sync_sandbox::{Fault, FaultKind};

use crate::support::{self, Daemon, QueueKind, eventually};

const BIN: &str = env!("CARGO_BIN_EXE_cio-chameleon-sync");

fn run(args: &[&str], config: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A configuration file for the CLI that points at the daemon's queue.
fn config_for(daemon: &Daemon, dir: &Path) -> std::path::PathBuf {
    let queue = &daemon.settings.queue;
    let backend = match &queue.amqp_url {
        Some(url) => format!("backend = \"amqp\"\namqp_url = \"{}\"\n", url.expose()),
        None => format!(
            "backend = \"embedded\"\npath = {:?}\n",
            queue.path.display().to_string()
        ),
    };
    let path = dir.join("cli.toml");
    std::fs::write(
        &path,
        format!(
            "[queue]\n{backend}prefix = \"{}\"\nretry_tiers = [\"1s\", \"3s\"]\n",
            queue.prefix
        ),
    )
    .unwrap();
    path
}

#[test]
fn config_check_prints_the_configuration_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[customerio]\nendpoint_token = \"endpoint-token-123456789\"\napi_key = \"cio-key-secret\"\n\
         site_id = \"site-1\"\nsigning_keys = [\"signing-secret-1\"]\n[chameleon]\naccount_secret = \"acct-secret-9\"\n\
         webhook_secrets = [\"hook-secret-7\"]\n[queue]\namqp_url = \"amqp://u:broker-pass@h/%2f\"\n",
    )
    .unwrap();
    let output = run(&["config", "check"], &config);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).starts_with("# configuration is valid\n"));
    let shown = text(&output.stdout) + &text(&output.stderr);
    for secret in [
        "endpoint-token-123456789",
        "cio-key-secret",
        "signing-secret-1",
        "acct-secret-9",
        "hook-secret-7",
        "broker-pass",
    ] {
        assert!(!shown.contains(secret), "{secret} leaked:\n{shown}");
    }
    assert!(shown.contains("[redacted]"), "{shown}");
    assert!(
        shown.contains("backend") || shown.contains("prefix = \"ccsync\""),
        "{shown}"
    );
}

#[test]
fn config_check_keeps_environment_values_as_written_and_names_ignored_variables() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    // No backend named: the effective one is printed.
    std::fs::write(&config, "[log]\nlevel = \"info\"\n").unwrap();
    let output = Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .env("SYNC__CUSTOMERIO__SITE_ID", "00123")
        .env("SYNC__CUSTOMERIO__API_KEY", "cio-key")
        .env("SYNC__CHAMELEON__ACCOUNT_SECRET", "acct-secret")
        .env("SYNC__CHAMELEON__WEBHOOK_SECRETS", "hook-secret")
        .env("SYNC__DELIVERY__RETRYABLE_STATUSES", "503")
        .env("SYNC_SERVER_LISTEN", "127.0.0.1:1")
        .output()
        .expect("the binary runs");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("site_id = \"00123\""), "{stdout}");
    assert!(stdout.contains("retryable_statuses = [503]"), "{stdout}");
    assert!(stdout.contains("backend = \"embedded\""), "{stdout}");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("SYNC_SERVER_LISTEN is ignored") && stderr.contains("SYNC__SECTION__KEY"),
        "{stderr}"
    );
}

/// The keys a file without credentials lacks, with their variables.
const MISSING: [(&str, &str); 5] = [
    (
        "chameleon.account_secret",
        "SYNC__CHAMELEON__ACCOUNT_SECRET",
    ),
    ("customerio.site_id", "SYNC__CUSTOMERIO__SITE_ID"),
    ("customerio.api_key", "SYNC__CUSTOMERIO__API_KEY"),
    (
        "customerio.endpoint_token",
        "SYNC__CUSTOMERIO__ENDPOINT_TOKEN",
    ),
    (
        "chameleon.webhook_secrets",
        "SYNC__CHAMELEON__WEBHOOK_SECRETS",
    ),
];

#[test]
fn config_check_names_every_missing_credential_and_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[queue]\nbackend = \"embedded\"\n").unwrap();
    let output = run(&["config", "check"], &config);
    assert_eq!(output.status.code(), Some(78), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(!stdout.contains("configuration is valid"), "{stdout}");
    assert!(
        stdout.starts_with("# configuration read, but incomplete"),
        "{stdout}"
    );
    assert!(stdout.contains("[queue]"), "{stdout}");
    let stderr = text(&output.stderr);
    for (key, variable) in MISSING {
        assert!(
            stderr.contains(key) && stderr.contains(variable),
            "{key} or {variable} not named:\n{stderr}"
        );
    }
    assert!(
        stderr.contains("`serve`, `receive`, `work` and `relay` would refuse to start"),
        "{stderr}"
    );
}

#[test]
fn serve_without_credentials_exits_78_before_touching_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[log]\nlevel = \"info\"\n").unwrap();
    let queue = dir.path().join("queue").join("queue.sqlite3");
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .env("SYNC__SERVER__LISTEN", listen.to_string())
        .env("SYNC__QUEUE__BACKEND", "embedded")
        .env("SYNC__QUEUE__PATH", &queue)
        .env("SYNC__CUSTOMERIO__SITE_ID", "site-1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    // A daemon that started anyway would run until stopped.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("serve started without its credentials");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(78), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    for (key, variable) in MISSING {
        if key == "customerio.site_id" {
            assert!(!stderr.contains(key), "site_id is set:\n{stderr}");
            continue;
        }
        assert!(
            stderr.contains(key) && stderr.contains(variable),
            "{key} or {variable} not named:\n{stderr}"
        );
    }
    assert!(
        stderr.contains("`serve` does not start until these are set"),
        "{stderr}"
    );
    assert!(!stderr.contains("started"), "{stderr}");
    assert!(!queue.parent().unwrap().exists(), "the queue was opened");
}

#[test]
fn unknown_keys_exit_non_zero_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[server]\nlisten_on = \"127.0.0.1:1\"\n").unwrap();
    let output = run(&["config", "check"], &config);
    assert_eq!(output.status.code(), Some(78));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("listen_on"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn dlq_without_the_daemons_queue_says_so_instead_of_listing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    let missing = dir.path().join("nowhere").join("queue.sqlite3");
    std::fs::write(
        &config,
        format!(
            "[queue]\nbackend = \"embedded\"\npath = {:?}\n",
            missing.display().to_string()
        ),
    )
    .unwrap();
    let output = run(&["dlq", "list", "--queue", "inbound"], &config);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("no embedded queue at") && stderr.contains("--config"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "{}", text(&output.stdout));
    assert!(!missing.exists(), "the queue file was created");
}

#[tokio::test]
async fn dlq_commands_on_rabbitmq() {
    let _broker = support::require_broker().await;
    dlq_commands(QueueKind::Amqp(support::BROKER.into())).await;
}

#[tokio::test]
async fn dlq_on_a_prefix_with_nothing_deployed_says_so_and_creates_nothing() {
    let _broker = support::require_broker().await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = support::unique_prefix();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[queue]\nbackend = \"amqp\"\namqp_url = \"amqp://guest:guest@{}/%2f\"\nprefix = \"{prefix}\"\n",
            support::BROKER
        ),
    )
    .unwrap();
    let output = run(&["dlq", "list", "--queue", "inbound"], &config);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("rabbitmq has no queue {prefix}."))
            && stderr.contains("create nothing"),
        "{stderr}"
    );
    let listed = Command::new("rabbitmqctl")
        .args(["list_queues", "name", "--quiet"])
        .output()
        .expect("rabbitmqctl runs (it ships with RabbitMQ)");
    let names = text(&listed.stdout);
    assert!(
        !names.lines().any(|name| name.starts_with(&prefix)),
        "dlq declared queues under {prefix}:\n{names}"
    );
}

#[tokio::test]
async fn dlq_commands_on_the_embedded_queue() {
    dlq_commands(QueueKind::Embedded(Default::default())).await;
}

async fn dlq_commands(queue: QueueKind) {
    let mut daemon = Daemon::start(queue, |_| {}).await;
    daemon.sandbox.inject(Fault {
        path_prefix: "/api/v2/batch".into(),
        count: 1,
        kind: FaultKind::Status {
            status: 400,
            body: r#"{"errors":[{"reason":"invalid","message":"bad attribute"}]}"#.into(),
            headers: vec![],
        },
    });
    let answer = daemon
        .post_chameleon(&support::payload("chameleon/tour-exited.json"))
        .await;
    assert_eq!(answer.status(), 200);
    let message_id = answer.json::<Value>().await.unwrap()["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&daemon, dir.path());

    // `dlq list --json` shows it once the relay gave up on it.
    let mut rows = Vec::new();
    for _ in 0..150 {
        let output = run(&["dlq", "list", "--queue", "outbound", "--json"], &config);
        assert!(output.status.success(), "{}", text(&output.stderr));
        rows = serde_json::from_slice::<Vec<Value>>(&output.stdout).unwrap();
        if !rows.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row["id"], message_id.as_str());
    assert_eq!(row["source"], "chameleon.webhook");
    assert_eq!(row["reason"], "upstream_rejected");
    assert_eq!(row["status"], 400);
    assert_eq!(row["attempts"], 1);
    assert!(
        row["error"].as_str().unwrap().contains("bad attribute"),
        "{row}"
    );
    for key in ["first_failed_at", "last_failed_at"] {
        assert!(
            row[key].as_str().is_some_and(|t| t.ends_with('Z')),
            "{key}: {row}"
        );
    }
    let body: Value = serde_json::from_str(row["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["kind"], "tour.exited");

    // `show`, the table, and the filters.
    let shown = run(
        &["dlq", "show", &message_id, "--queue", "outbound"],
        &config,
    );
    assert!(
        text(&shown.stdout).contains("tour.exited"),
        "{}",
        text(&shown.stderr)
    );
    let table = run(&["dlq", "list", "--queue", "outbound"], &config);
    assert!(text(&table.stdout).contains(&message_id));
    let none = run(
        &[
            "dlq",
            "list",
            "--queue",
            "outbound",
            "--json",
            "--reason",
            "no_identity",
        ],
        &config,
    );
    assert_eq!(
        serde_json::from_slice::<Vec<Value>>(&none.stdout)
            .unwrap()
            .len(),
        0
    );

    // Replay refuses an empty filter, counts on --dry-run, then delivers with the same id.
    let refused = run(&["dlq", "replay", "--queue", "outbound"], &config);
    assert!(!refused.status.success());
    let dry = run(
        &["dlq", "replay", "--queue", "outbound", "--all", "--dry-run"],
        &config,
    );
    assert!(text(&dry.stdout).starts_with("1 "), "{}", text(&dry.stdout));
    let replay = run(
        &["dlq", "replay", "--queue", "outbound", "--id", &message_id],
        &config,
    );
    assert!(replay.status.success(), "{}", text(&replay.stderr));
    assert!(
        text(&replay.stdout).contains("replayed 1"),
        "{}",
        text(&replay.stdout)
    );
    let delivered = support::eventually(std::time::Duration::from_secs(30), || async {
        daemon
            .sandbox
            .accepted(sync_sandbox::Upstream::Customerio)
            .len()
            == 1
    })
    .await;
    assert!(delivered, "{:#?}", daemon.sandbox.requests());
    let after = run(&["dlq", "list", "--queue", "outbound", "--json"], &config);
    assert_eq!(
        serde_json::from_slice::<Vec<Value>>(&after.stdout)
            .unwrap()
            .len(),
        0
    );

    // Purge: a second dead letter, deleted with --yes.
    daemon.sandbox.inject(Fault {
        path_prefix: "/api/v2/batch".into(),
        count: 1,
        kind: FaultKind::Status {
            status: 401,
            body: "{}".into(),
            headers: vec![],
        },
    });
    daemon
        .post_chameleon(&support::payload("chameleon/tour-started.json"))
        .await;
    let arrived = eventually(std::time::Duration::from_secs(30), || async {
        let output = run(&["dlq", "list", "--queue", "outbound", "--json"], &config);
        serde_json::from_slice::<Vec<Value>>(&output.stdout).is_ok_and(|rows| rows.len() == 1)
    })
    .await;
    assert!(arrived, "the second dead letter never arrived");
    // Without --yes and with nobody to answer, nothing is deleted, and the exit says so.
    let declined = run(&["dlq", "purge", "--queue", "outbound", "--all"], &config);
    assert!(!declined.status.success());
    assert!(
        text(&declined.stderr).contains("purge not confirmed: nothing deleted"),
        "{}",
        text(&declined.stderr)
    );
    let purged = run(
        &["dlq", "purge", "--queue", "outbound", "--all", "--yes"],
        &config,
    );
    let purged = text(&purged.stdout);
    assert!(purged.contains("purged 1"), "{purged}");
    let empty = run(&["dlq", "list", "--queue", "outbound", "--json"], &config);
    assert_eq!(
        serde_json::from_slice::<Vec<Value>>(&empty.stdout)
            .unwrap()
            .len(),
        0
    );

    daemon.stop().await.unwrap();
}

#[test]
fn demo_with_its_port_taken_stops_before_posting_anything() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    holder.set_nonblocking(true).unwrap();
    let taken = holder.local_addr().unwrap().to_string();
    let free = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let output = Command::new(BIN)
        .args([
            "demo",
            "--once",
            "--listen",
            &taken,
            "--sandbox-listen",
            &free,
        ])
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs");
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot listen on {taken} for the daemon (--listen)"
        )),
        "{stderr}"
    );
    assert!(
        matches!(holder.accept(), Err(err) if err.kind() == std::io::ErrorKind::WouldBlock),
        "the demo connected to the port's holder"
    );
}

#[tokio::test]
async fn serve_with_a_password_the_broker_refuses_stops_and_says_so() {
    let _broker = support::require_broker().await;
    let listen = support::free_addr().await;
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/rabbitmq-local.toml"
    );
    let output = Command::new(BIN)
        .args(["serve", "--config", example])
        .env_remove("RUST_LOG")
        .env("SYNC__SERVER__LISTEN", listen.to_string())
        .env("SYNC__QUEUE__PREFIX", support::unique_prefix())
        .env(
            "SYNC__QUEUE__AMQP_URL",
            format!("amqp://guest:not-the-password@{}/%2f", support::BROKER),
        )
        .output()
        .expect("the binary runs");
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("rabbitmq refused the login") && stderr.contains("queue.amqp_url"),
        "{stderr}"
    );
}
