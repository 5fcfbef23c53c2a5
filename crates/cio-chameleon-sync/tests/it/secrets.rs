//! No secret leaves the process: the real executable runs at `RUST_LOG=trace` with distinctive
//! secrets for the endpoint token, the signing keys, the Chameleon account secret and webhook
//! secret, the Customer.io API key and the broker password; requests succeed and fail in every
//! way the test can provoke; then its whole log, its `/metrics` page and every answer are searched
//! for each secret.

use std::process::{Command, Stdio};
use std::time::Duration;

use sync_core::signature::{sign_chameleon, sign_customerio};
use sync_sandbox::{Fault, FaultKind, Sandbox, SandboxConfig};

use crate::support::{self, eventually};

const BIN: &str = env!("CARGO_BIN_EXE_cio-chameleon-sync");
const TOKEN: &str = "tok-S3CRET-endpoint-7a1";
const SIGNING: &str = "sig-S3CRET-signing-7a2";
const HOOK: &str = "hook-S3CRET-webhook-7a3";
const ACCOUNT: &str = "acct-S3CRET-chameleon-7a4";
const API_KEY: &str = "key-S3CRET-customerio-7a5";
const BROKER_USER: &str = "ccsync-secret-test";
const BROKER_PASS: &str = "pass-S3CRET-broker-7a6";

fn rabbitmqctl(args: &[&str]) {
    let _ = Command::new("rabbitmqctl").args(args).output();
}

#[tokio::test]
async fn no_secret_reaches_logs_metrics_or_answers() {
    let _broker = support::require_broker().await;
    rabbitmqctl(&["add_user", BROKER_USER, BROKER_PASS]);
    rabbitmqctl(&["set_permissions", BROKER_USER, ".*", ".*", ".*"]);

    let (sandbox, sandbox_addr) = Sandbox::spawn(SandboxConfig {
        chameleon_account_secret: ACCOUNT.into(),
        customerio_site_id: "site-7".into(),
        customerio_api_key: API_KEY.into(),
        chameleon_requests_per_minute: None,
        customerio_requests_per_second: None,
    })
    .await
    .unwrap();
    // One failure of each kind on the way.
    for (path, status) in [("/v3/observe/hooks/events", 500), ("/api/v2/batch", 401)] {
        sandbox.inject(Fault {
            path_prefix: path.into(),
            count: 1,
            kind: FaultKind::Status {
                status,
                body: "{}".into(),
                headers: vec![],
            },
        });
    }

    let dir = tempfile::tempdir().unwrap();
    let prefix = support::unique_prefix();
    let listen = support::free_addr().await;
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{listen}\"\n[queue]\nbackend = \"amqp\"\nprefix = \"{prefix}\"\n\
             retry_tiers = [\"1s\", \"3s\"]\n\
             [customerio]\nendpoint_token = \"{TOKEN}\"\nsigning_keys = [\"{SIGNING}\"]\n\
             track_url = \"http://{sandbox_addr}\"\nsite_id = \"site-7\"\n\
             [chameleon]\napi_url = \"http://{sandbox_addr}\"\nwebhook_secrets = [\"{HOOK}\"]\n\
             requests_per_minute = 6000\n[delivery]\ninitial_delay = \"1s\"\njitter = 0.0\n\
             [dedupe]\npath = {:?}\n",
            dir.path().join("seen.sqlite3").display().to_string()
        ),
    )
    .unwrap();
    // Two secrets come from the environment and a file, as in production.
    let key_file = dir.path().join("account-secret");
    std::fs::write(&key_file, ACCOUNT).unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "trace")
        .env("SYNC__CUSTOMERIO__API_KEY", API_KEY)
        .env("SYNC__CHAMELEON__ACCOUNT_SECRET_FILE", &key_file)
        .env(
            "SYNC__QUEUE__AMQP_URL",
            format!("amqp://{BROKER_USER}:{BROKER_PASS}@{}/%2f", support::BROKER),
        )
        .stdout(Stdio::from(
            std::fs::File::create(dir.path().join("stdout")).unwrap(),
        ))
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("stderr")).unwrap(),
        ))
        .spawn()
        .unwrap();

    let base = format!("http://{listen}");
    let http = reqwest::Client::new();
    let ready = eventually(Duration::from_secs(20), || async {
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|a| a.status().is_success())
    })
    .await;
    assert!(ready, "the daemon did not become ready");

    let mut answers = String::new();
    let ts = (sync_core::time::now_ms() / 1000).to_string();
    let opened = support::payload("customerio/reporting-email-opened.json");
    let tour = support::restamp(&support::payload("chameleon/tour-started.json"));
    let requests = [
        http.post(format!("{base}/v1/customerio/{TOKEN}/reporting"))
            .header("x-cio-timestamp", &ts)
            .header("x-cio-signature", sign_customerio(SIGNING, &ts, &opened))
            .body(opened.clone()),
        http.post(format!("{base}/v1/customerio/{TOKEN}/reporting"))
            .header("x-cio-timestamp", &ts)
            .header("x-cio-signature", sign_customerio("wrong", &ts, &opened))
            .body(opened.clone()),
        http.post(format!("{base}/v1/customerio/{TOKEN}x/events"))
            .body("{}"),
        http.post(format!("{base}/v1/customerio/{TOKEN}/events"))
            .body(r#"{"uid":"u1","name":"Secret check"}"#),
        http.post(format!("{base}/v1/customerio/{TOKEN}/profiles"))
            .body("not json"),
        http.post(format!("{base}/v1/chameleon/webhooks"))
            .header("x-chameleon-signature", sign_chameleon(HOOK, &tour))
            .body(tour.clone()),
        http.post(format!("{base}/v1/chameleon/webhooks"))
            .header("x-chameleon-signature", "00")
            .body(tour.clone()),
    ];
    for request in requests {
        let answer = request.send().await.unwrap();
        answers.push_str(&format!(
            "{} {}\n",
            answer.status(),
            answer.text().await.unwrap()
        ));
    }

    // Wait for the retried deliveries (500 then success; 401 dead-lettered).
    let delivered = sandbox
        .wait_for(
            |r| r.iter().filter(|r| r.status < 300).count() >= 2,
            Duration::from_secs(30),
        )
        .await;
    assert!(delivered, "{:#?}", sandbox.requests());
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("ccsync_received_total"), "{metrics}");
    // Refusals are counted by route and status, the wrong token included.
    for refused in [
        r#"ccsync_receiver_requests_total{source="customerio.reporting",status="401"} 1"#,
        r#"ccsync_receiver_requests_total{source="customerio.events",status="404"} 1"#,
        r#"ccsync_receiver_requests_total{source="chameleon.webhook",status="401"} 1"#,
    ] {
        assert!(
            metrics.contains(refused),
            "{refused} missing from\n{metrics}"
        );
    }

    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let mut child = child;
    let exit = child.wait().unwrap();
    assert!(exit.success(), "exit {exit}");
    let log = std::fs::read_to_string(dir.path().join("stderr")).unwrap()
        + &std::fs::read_to_string(dir.path().join("stdout")).unwrap();
    assert!(
        log.len() > 10_000,
        "trace logging produced too little to be meaningful"
    );
    assert!(
        log.contains("/v1/customerio/***/reporting"),
        "paths are logged masked"
    );
    assert!(
        log.lines()
            .any(|line| line.contains("WARN") && line.contains("webhook refused")),
        "the first refusal is logged at warn"
    );

    for secret in [TOKEN, SIGNING, HOOK, ACCOUNT, API_KEY, BROKER_PASS] {
        for (place, text) in [("log", &log), ("metrics", &metrics), ("answers", &answers)] {
            if let Some(at) = text.find(secret) {
                let start = at.saturating_sub(200);
                panic!(
                    "{secret} leaked in the {place}: ...{}...",
                    &text[start..at + secret.len()]
                );
            }
        }
    }
    // The broker password as a byte list, the way protocol frames print it.
    let bytes = format!("{:?}", BROKER_PASS.as_bytes());
    let bytes = bytes.trim_start_matches('[').trim_end_matches(']');
    assert!(
        !log.contains(bytes),
        "the broker password leaked as bytes in the log"
    );
    // Basic auth travels base64-encoded: look for that form too.
    let basic = base64_of(&format!("site-7:{API_KEY}"));
    assert!(
        !log.contains(&basic),
        "the Basic credentials leaked in the log"
    );

    rabbitmqctl(&["delete_user", BROKER_USER]);
    support::delete_topology(&prefix, &["1s", "3s"]).await;
}

fn base64_of(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
