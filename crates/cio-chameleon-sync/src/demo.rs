//! `sandbox` runs local stand-ins for both upstream APIs; `demo` runs the sandbox and the daemon
//! together on the embedded queue, posts the sample payloads signed as the providers sign them,
//! and prints what each upstream received. Nothing leaves the machine.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::Value;
use sync_core::Secret;
use sync_core::signature::{sign_chameleon, sign_customerio};
use sync_sandbox::{Sandbox, SandboxConfig, Upstream};
use tokio_util::sync::CancellationToken;

use crate::cli::{DemoArgs, SandboxArgs};
use crate::serve::{self, Roles};
use crate::settings::{Backend, Settings};

const DEMO_TOKEN: &str = "demo-endpoint-token-0001";
const DEMO_SIGNING_KEY: &str = "demo-signing-key";
const DEMO_WEBHOOK_SECRET: &str = "demo-webhook-secret";

/// `cio-chameleon-sync sandbox`: serve until Ctrl-C.
pub async fn sandbox(args: SandboxArgs) -> anyhow::Result<()> {
    let sandbox = Sandbox::new(sandbox_config(&args));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
    tracing::info!(listen = %args.listen, "sandbox serving Chameleon and Customer.io stand-ins");
    println!(
        "sandbox on http://{0}: Chameleon at http://{0}, Customer.io Track at http://{0}, \
         recorded requests at http://{0}/_sandbox/requests",
        args.listen
    );
    let shutdown = CancellationToken::new();
    tokio::spawn(serve::wait_for_signal(shutdown.clone()));
    sandbox
        .serve(listener, async move { shutdown.cancelled().await })
        .await
        .context("sandbox failed")
}

fn sandbox_config(args: &SandboxArgs) -> SandboxConfig {
    SandboxConfig {
        chameleon_account_secret: args.account_secret.clone(),
        customerio_site_id: args.site_id.clone(),
        customerio_api_key: args.api_key.clone(),
        chameleon_requests_per_minute: args.chameleon_requests_per_minute,
        customerio_requests_per_second: args.customerio_requests_per_second,
    }
}

/// `cio-chameleon-sync demo`.
pub async fn run(
    mut settings: Settings,
    args: DemoArgs,
    metrics: Option<PrometheusHandle>,
) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();

    // Both ports first: with either taken, nothing may be posted to whoever holds it.
    let daemon_listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} for the daemon (--listen)", args.listen))?;

    // The sandbox plays both upstreams.
    let sandbox_args = SandboxArgs {
        listen: args.sandbox_listen,
        account_secret: "demo-account-secret".into(),
        site_id: "demo-site".into(),
        api_key: "demo-api-key".into(),
        chameleon_requests_per_minute: None,
        customerio_requests_per_second: None,
    };
    let sandbox = Sandbox::new(sandbox_config(&sandbox_args));
    let listener = tokio::net::TcpListener::bind(args.sandbox_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for the sandbox (--sandbox-listen)",
                args.sandbox_listen
            )
        })?;
    let sandbox_url = format!("http://{}", args.sandbox_listen);
    let stop_sandbox = shutdown.clone();
    let sandbox_task = tokio::spawn(sandbox.clone().serve(listener, async move {
        stop_sandbox.cancelled().await;
    }));

    // The daemon, on a fresh embedded queue, pointed at the sandbox.
    let workdir = std::env::temp_dir().join(format!("ccsync-demo-{}", std::process::id()));
    std::fs::create_dir_all(&workdir)?;
    settings.server.listen = args.listen;
    settings.queue.backend = Some(Backend::Embedded);
    settings.queue.path = workdir.join("queue.sqlite3");
    settings.customerio.endpoint_token = Secret::new(DEMO_TOKEN);
    settings.customerio.signing_keys = vec![Secret::new(DEMO_SIGNING_KEY)];
    settings.customerio.track_url = Some(sandbox_url.clone());
    settings.customerio.site_id = sandbox_args.site_id.clone();
    settings.customerio.api_key = Secret::new(sandbox_args.api_key.clone());
    settings.chameleon.api_url = sandbox_url.clone();
    settings.chameleon.account_secret = Secret::new(sandbox_args.account_secret.clone());
    settings.chameleon.webhook_secrets = vec![Secret::new(DEMO_WEBHOOK_SECRET)];
    settings.chameleon.requests_per_minute = 600;
    settings.chameleon.batch_linger = Duration::from_millis(300);
    settings.validate()?;
    let mut daemon = tokio::spawn(serve::run_on(
        daemon_listener,
        settings,
        Roles::ALL,
        metrics,
        shutdown.clone(),
    ));

    let base = format!("http://{}", args.listen);
    let client = reqwest::Client::new();
    tokio::select! {
        ready = wait_ready(&client, &base) => ready?,
        // The daemon stopped before it was ready: say why, rather than that it was not ready.
        ended = &mut daemon => {
            shutdown.cancel();
            let _ = sandbox_task.await;
            let _ = std::fs::remove_dir_all(&workdir);
            ended.context("daemon task failed")??;
            bail!("the daemon stopped before it was ready");
        }
    }

    // Post every sample as its provider would, signed with the demo keys.
    let samples = load_samples(&args.payloads)?;
    println!("\n== posting {} sample payloads to {base}", samples.len());
    for sample in &samples {
        let answer = post_sample(&client, &base, sample).await?;
        println!("  {:<44} -> {answer}", sample.name);
    }

    println!("\n== waiting for the worker and the relay");
    let settled = sandbox
        .wait_for(
            |requests| requests.iter().filter(|r| r.status < 300).count() >= 3,
            Duration::from_secs(15),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    if !settled {
        println!("  (the upstreams received less than expected; see the log above)");
    }
    print_received(&sandbox);

    if args.once {
        shutdown.cancel();
    } else {
        println!(
            "\nThe daemon keeps running: receiver at {base}, sandbox at {sandbox_url} \
             (recorded requests: {sandbox_url}/_sandbox/requests). Post more with curl as the \
             README shows, using token {DEMO_TOKEN}, signing key {DEMO_SIGNING_KEY} and webhook \
             secret {DEMO_WEBHOOK_SECRET}. Ctrl-C (or SIGTERM) stops both."
        );
        serve::wait_for_signal(shutdown.clone()).await;
    }
    daemon.await.context("daemon task failed")??;
    let _ = sandbox_task.await;
    let _ = std::fs::remove_dir_all(&workdir);
    Ok(())
}

async fn wait_ready(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    for _ in 0..100 {
        if let Ok(answer) = client.get(format!("{base}/readyz")).send().await
            && answer.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the daemon did not become ready within 10 s")
}

/// A sample payload and the route it belongs to.
struct Sample {
    name: String,
    route: SampleRoute,
    body: Vec<u8>,
}

#[derive(Clone, Copy)]
enum SampleRoute {
    Customerio(&'static str),
    Chameleon,
}

/// Samples are JSON files named after their route: `customerio/reporting-*.json`,
/// `customerio/workflow-{profile,company,event}.json`, `chameleon/*.json`.
fn load_samples(dir: &Path) -> anyhow::Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for (folder, route_of) in [
        (
            "customerio",
            customerio_route as fn(&str) -> Option<SampleRoute>,
        ),
        ("chameleon", |_: &str| Some(SampleRoute::Chameleon)),
    ] {
        let folder_path = dir.join(folder);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&folder_path)
            .with_context(|| format!("cannot read sample folder {}", folder_path.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .collect();
        files.sort();
        for path in files {
            let file = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let Some(route) = route_of(&file) else {
                continue;
            };
            let body = std::fs::read(&path)?;
            samples.push(Sample {
                name: format!("{folder}/{file}"),
                route,
                body,
            });
        }
    }
    Ok(samples)
}

fn customerio_route(file: &str) -> Option<SampleRoute> {
    let route = if file.starts_with("reporting-") {
        "reporting"
    } else if file.starts_with("workflow-profile") {
        "profiles"
    } else if file.starts_with("workflow-company") {
        "companies"
    } else if file.starts_with("workflow-event") {
        "events"
    } else {
        return None;
    };
    Some(SampleRoute::Customerio(route))
}

async fn post_sample(
    client: &reqwest::Client,
    base: &str,
    sample: &Sample,
) -> anyhow::Result<String> {
    let now = sync_core::time::now_ms() / 1000;
    let request = match sample.route {
        SampleRoute::Customerio(route) => {
            let timestamp = now.to_string();
            let signature = sign_customerio(DEMO_SIGNING_KEY, &timestamp, &sample.body);
            client
                .post(format!("{base}/v1/customerio/{DEMO_TOKEN}/{route}"))
                .header("x-cio-timestamp", timestamp)
                .header("x-cio-signature", signature)
                .header("x-cio-idempotency-key", format!("demo-{}", sample.name))
                .body(sample.body.clone())
        }
        SampleRoute::Chameleon => {
            // Chameleon stamps each delivery with `sent_at`; a stored sample is re-stamped now.
            let mut value: Value = serde_json::from_slice(&sample.body)?;
            value["sent_at"] = Value::String(sync_core::time::format_ms(now * 1000));
            let body = serde_json::to_vec(&value)?;
            let signature = sign_chameleon(DEMO_WEBHOOK_SECRET, &body);
            client
                .post(format!("{base}/v1/chameleon/webhooks"))
                .header("x-chameleon-signature", signature)
                .body(body)
        }
    };
    let answer = request
        .header("content-type", "application/json")
        .send()
        .await?;
    let status = answer.status();
    let text = answer.text().await.unwrap_or_default();
    Ok(format!("{} {}", status.as_u16(), text.trim()))
}

fn print_received(sandbox: &Sandbox) {
    for (upstream, title) in [
        (Upstream::Chameleon, "Chameleon received"),
        (Upstream::Customerio, "Customer.io received"),
    ] {
        let requests = sandbox.accepted(upstream);
        let count = requests.len();
        println!(
            "\n== {title} {count} request{}",
            if count == 1 { "" } else { "s" }
        );
        for request in requests {
            println!(
                "  {} {} -> {}",
                request.method, request.path, request.status
            );
            // A batch is shown item by item; a single call as its body.
            let items = ["profiles", "companies", "batch"]
                .iter()
                .find_map(|key| request.body.get(*key).and_then(Value::as_array).cloned())
                .unwrap_or_else(|| vec![request.body.clone()]);
            for item in items {
                let text = serde_json::to_string(&item).unwrap_or_default();
                let shown: String = text.chars().take(300).collect();
                let more = if shown.len() < text.len() { " ..." } else { "" };
                println!("      {shown}{more}");
            }
        }
    }
}
