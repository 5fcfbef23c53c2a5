//! `dlq list|show|replay|purge`: the operator's view of dead letters (DESIGN §7). Every command
//! talks to the configured queue directly, so it works while the daemon runs.

use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sync_core::time::{format_ms, now_ms, parse_rfc3339_ms};
use sync_core::{Direction, Source};
use sync_queue::{DeadFilter, DeadLetter};

use crate::cli::{DlqCommand, Filter};
use crate::settings::{Backend, Settings};
use crate::wiring;

pub async fn run(settings: Settings, command: DlqCommand) -> anyhow::Result<()> {
    // Say which queue is read: without the daemon's configuration this is the embedded default,
    // and an empty listing from the wrong queue would look like good news.
    match settings.queue.effective_backend() {
        Backend::Amqp => eprintln!("RabbitMQ, queue prefix {}", settings.queue.prefix),
        Backend::Embedded => {
            let path = &settings.queue.path;
            if !path.exists() {
                bail!(
                    "no embedded queue at {}: pass the daemon's configuration with --config \
                     (or SYNC_CONFIG) to read its dead letters",
                    path.display()
                );
            }
            eprintln!("embedded queue {}", path.display());
        }
    }
    let queue = wiring::existing_queue(&settings).await?;
    let result = match command {
        DlqCommand::List { filter, json } => {
            let (direction, dead_filter) = parse_filter(&filter, false)?;
            let dead = queue.dead_letters(direction, &dead_filter).await?;
            if json {
                let rows: Vec<Value> = dead.iter().map(to_json).collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print_table(&dead);
            }
            Ok(())
        }
        DlqCommand::Show { id, queue: name } => {
            let direction: Direction = name.into();
            let filter = DeadFilter {
                ids: vec![id.clone()],
                ..DeadFilter::default()
            };
            let dead = queue.dead_letters(direction, &filter).await?;
            let Some(letter) = dead.first() else {
                bail!("no dead letter with id {id} in the {direction} dead-letter queue");
            };
            println!("{}", serde_json::to_string_pretty(&show_json(letter))?);
            Ok(())
        }
        DlqCommand::Replay {
            filter,
            dry_run,
            rate,
        } => {
            let (direction, dead_filter) = parse_filter(&filter, true)?;
            if dry_run {
                let count = queue.dead_letters(direction, &dead_filter).await?.len();
                println!("{} would be replayed from {direction}", letters(count));
            } else {
                let count = queue.replay(direction, &dead_filter, rate).await?;
                println!("replayed {} to {direction}", letters(count));
                if count < dead_filter.ids.len() {
                    bail!(
                        "{} of the ids named are not dead letters in {direction}",
                        dead_filter.ids.len() - count
                    );
                }
            }
            Ok(())
        }
        DlqCommand::Purge {
            filter,
            dry_run,
            yes,
        } => {
            let (direction, dead_filter) = parse_filter(&filter, true)?;
            let count = queue.dead_letters(direction, &dead_filter).await?.len();
            if dry_run {
                println!("{} would be purged from {direction}", letters(count));
            } else if count == 0 && !dead_filter.ids.is_empty() {
                bail!("no dead letter in {direction} has the ids named");
            } else if count == 0 {
                println!("no dead letters match");
            } else if yes || confirm(&format!("delete {} from {direction}?", letters(count)))? {
                let purged = queue.purge(direction, &dead_filter).await?;
                println!("purged {} from {direction}", letters(purged));
            } else {
                // Declined (or no terminal to ask on): a script must not read it as done.
                bail!("purge not confirmed: nothing deleted (--yes skips the question)");
            }
            Ok(())
        }
    };
    queue.close().await;
    result
}

/// The filter as the queue understands it. Replay and purge refuse an empty filter without
/// `--all`, so that a forgotten flag cannot touch every dead letter.
fn parse_filter(filter: &Filter, needs_selection: bool) -> anyhow::Result<(Direction, DeadFilter)> {
    let source = filter
        .source
        .as_deref()
        .map(|s| s.parse::<Source>().map_err(anyhow::Error::msg))
        .transpose()?;
    let dead_filter = DeadFilter {
        ids: filter.ids.clone(),
        reason: filter.reason.clone(),
        source,
        since: filter.since.as_deref().map(parse_instant).transpose()?,
        until: filter.until.as_deref().map(parse_instant).transpose()?,
    };
    let selects = !dead_filter.ids.is_empty()
        || dead_filter.reason.is_some()
        || dead_filter.source.is_some()
        || dead_filter.since.is_some()
        || dead_filter.until.is_some();
    if needs_selection && !selects && !filter.all {
        bail!("name what to act on: --all, --id, --reason, --source, --since or --until");
    }
    Ok((filter.queue.into(), dead_filter))
}

/// An RFC 3339 instant, or a duration ago (`90m`, `2h`, `7d`).
fn parse_instant(text: &str) -> anyhow::Result<i64> {
    if let Some(ms) = parse_rfc3339_ms(text) {
        return Ok(ms);
    }
    let ago: Duration = humantime_serde::re::humantime::parse_duration(text)
        .with_context(|| format!("{text:?} is neither an RFC 3339 instant nor a duration"))?;
    Ok(now_ms() - i64::try_from(ago.as_millis()).unwrap_or(i64::MAX))
}

/// One row of `dlq list --json` (DESIGN §7).
fn to_json(dead: &DeadLetter) -> Value {
    let envelope = &dead.envelope;
    json!({
        "id": envelope.message_id,
        "source": envelope.source.routing_key(),
        "reason": dead.reason,
        "status": dead.status,
        "error": dead.error,
        "attempts": envelope.attempt,
        "first_failed_at": format_ms(envelope.first_failed_at.unwrap_or(dead.dead_at)),
        "last_failed_at": format_ms(dead.dead_at),
        "received_at": format_ms(envelope.received_at),
        "provider_event_id": envelope.provider_event_id,
        "body": String::from_utf8_lossy(&envelope.body),
    })
}

fn show_json(dead: &DeadLetter) -> Value {
    let mut value = to_json(dead);
    let body = serde_json::from_slice::<Value>(&dead.envelope.body).ok();
    if let (Some(body), Some(map)) = (body, value.as_object_mut()) {
        map.insert("payload".into(), body);
    }
    value
}

fn print_table(dead: &[DeadLetter]) {
    if dead.is_empty() {
        println!("no dead letters");
        return;
    }
    // Columns as wide as their longest value, so long reasons do not push the others over.
    let width = |header: &str, values: &mut dyn Iterator<Item = usize>| {
        values.fold(header.chars().count(), usize::max)
    };
    let id = width(
        "ID",
        &mut dead.iter().map(|l| l.envelope.message_id.chars().count()),
    );
    let source = width(
        "SOURCE",
        &mut dead.iter().map(|l| l.envelope.source.routing_key().len()),
    );
    let reason = width("REASON", &mut dead.iter().map(|l| l.reason.chars().count()));
    println!(
        "{:<id$}  {:<source$}  {:<reason$}  {:>6}  {:>8}  {:<24}  ERROR",
        "ID", "SOURCE", "REASON", "STATUS", "ATTEMPTS", "LAST FAILED"
    );
    for letter in dead {
        let envelope = &letter.envelope;
        let status = letter.status.map_or("-".to_owned(), |s| s.to_string());
        let error: String = letter.error.chars().take(60).collect();
        println!(
            "{:<id$}  {:<source$}  {:<reason$}  {:>6}  {:>8}  {:<24}  {}",
            envelope.message_id,
            envelope.source.routing_key(),
            letter.reason,
            status,
            envelope.attempt,
            format_ms(letter.dead_at),
            error
        );
    }
    println!("{}", letters(dead.len()));
}

fn letters(count: usize) -> String {
    match count {
        1 => "1 dead letter".to_owned(),
        _ => format!("{count} dead letters"),
    }
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
