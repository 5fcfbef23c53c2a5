//! The SQL of the embedded queue: every statement that reads or changes the `messages` table.
//! These functions are plain and blocking; the writer thread runs the ones that write, and the
//! reader connection runs the listings.

use std::sync::Arc;

use bytes::Bytes;
use rusqlite::types::{Type, Value};
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use crate::{DeadFilter, DeadLetter, Direction, Envelope, Failure, Source};

/// The envelope's columns, in the order [`envelope_at`] reads them.
const ENVELOPE_COLUMNS: &str =
    "message_id, source, received_at, attempt, provider_event_id, first_failed_at, body";

/// The reason recorded on a message that was delivered too often without being settled.
pub(super) const DELIVERY_LIMIT_REASON: &str = "delivery_limit";

/// Read the envelope columns starting at column `first`.
// Limitation: a row whose source this build does not know (written by a newer build without a
// schema change) fails every claim pass of its direction until an operator removes it.
fn envelope_at(row: &Row<'_>, first: usize) -> rusqlite::Result<Envelope> {
    let source: String = row.get(first + 1)?;
    let source = Source::from_routing_key(&source).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            first + 1,
            Type::Text,
            format!("unknown source {source:?}").into(),
        )
    })?;
    let body: Vec<u8> = row.get(first + 6)?;
    Ok(Envelope {
        message_id: row.get(first)?,
        source,
        received_at: row.get(first + 2)?,
        attempt: row.get(first + 3)?,
        provider_event_id: row.get(first + 4)?,
        first_failed_at: row.get(first + 5)?,
        body: Bytes::from(body),
    })
}

/// Queue a new message, due now.
pub(super) fn insert(conn: &Connection, envelope: &Envelope, now: i64) -> rusqlite::Result<()> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO messages (direction, state, due_at, message_id, source, received_at, \
         attempt, provider_event_id, first_failed_at, body) \
         VALUES (?1, 'ready', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    insert.execute(params![
        envelope.direction().as_str(),
        now,
        envelope.message_id,
        envelope.source.routing_key(),
        envelope.received_at,
        envelope.attempt,
        envelope.provider_event_id,
        envelope.first_failed_at,
        envelope.body.as_ref(),
    ])?;
    Ok(())
}

/// What one claim pass asks for.
pub(super) struct ClaimRequest {
    pub direction: Direction,
    /// How many messages the consumer has room for.
    pub room: usize,
    /// Marks the leases taken by this pass; settling checks it.
    pub token: String,
    pub lease_ms: i64,
    /// Deliveries without settlement after which a message is dead-lettered; 0 for no limit.
    pub delivery_limit: u32,
}

/// One message claimed under a lease.
pub(super) struct ClaimedRow {
    pub seq: i64,
    pub envelope: Envelope,
    pub redelivered: bool,
}

/// What a claim pass found.
#[derive(Default)]
pub(super) struct Claimed {
    pub rows: Vec<ClaimedRow>,
    /// Message ids dead-lettered because they reached the delivery limit.
    pub over_limit: Vec<String>,
    /// When the next ready message of the direction becomes due (or its lease expires).
    pub next_due: Option<i64>,
}

/// Lease up to `request.room` due messages of a direction, oldest due first. A due message that
/// was already delivered `delivery_limit` times without settlement is dead-lettered instead.
pub(super) fn claim(
    conn: &Connection,
    request: &ClaimRequest,
    now: i64,
) -> rusqlite::Result<Claimed> {
    let mut select = conn.prepare_cached(&format!(
        "SELECT seq, delivery_count, {ENVELOPE_COLUMNS} FROM messages \
         WHERE direction = ?1 AND state = 'ready' AND due_at <= ?2 \
         ORDER BY due_at, seq LIMIT ?3"
    ))?;
    // While a message is leased its due time is the lease expiry, so the one index above finds
    // both due messages and expired leases.
    let mut lease = conn.prepare_cached(
        "UPDATE messages SET lease_token = ?1, lease_expires_at = ?2, due_at = ?2, \
         delivery_count = delivery_count + 1 WHERE seq = ?3",
    )?;
    let expires_at = now.saturating_add(request.lease_ms);
    let direction = request.direction.as_str();
    let mut claimed = Claimed::default();

    // Each round either leases rows (due later now) or dead-letters them, so the loop ends.
    while claimed.rows.len() < request.room {
        let wanted = (request.room - claimed.rows.len()) as i64;
        let due = select
            .query_map(params![direction, now, wanted], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, u32>(1)?,
                    envelope_at(row, 2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        if due.is_empty() {
            break;
        }
        for (seq, deliveries, envelope) in due {
            if request.delivery_limit > 0 && deliveries >= request.delivery_limit {
                mark_dead(conn, seq, &over_limit(deliveries), now)?;
                claimed.over_limit.push(envelope.message_id);
                continue;
            }
            lease.execute(params![request.token, expires_at, seq])?;
            claimed.rows.push(ClaimedRow {
                seq,
                envelope,
                redelivered: deliveries > 0,
            });
        }
    }

    claimed.next_due = conn
        .prepare_cached(
            "SELECT MIN(due_at) FROM messages WHERE direction = ?1 AND state = 'ready'",
        )?
        .query_row([direction], |row| row.get(0))?;
    Ok(claimed)
}

/// Push the expiry of leases still held under their tokens to `expires_at`; a lease taken over by
/// another consumer, or a message settled meanwhile, is left alone. Returns how many were renewed.
pub(super) fn renew(
    conn: &Connection,
    held: &[(i64, Arc<str>)],
    expires_at: i64,
) -> rusqlite::Result<usize> {
    let mut renew = conn.prepare_cached(
        "UPDATE messages SET lease_expires_at = ?3, due_at = ?3 \
         WHERE seq = ?1 AND lease_token = ?2 AND state = 'ready'",
    )?;
    let mut renewed = 0;
    for (seq, token) in held {
        renewed += renew.execute(params![seq, &**token, expires_at])?;
    }
    Ok(renewed)
}

/// Delete a settled message. False when the lease is no longer this token's.
pub(super) fn ack(conn: &Connection, seq: i64, token: &str) -> rusqlite::Result<bool> {
    let deleted = conn
        .prepare_cached("DELETE FROM messages WHERE seq = ?1 AND lease_token = ?2")?
        .execute(params![seq, token])?;
    Ok(deleted == 1)
}

/// Turn a leased message into its next attempt, due at `due_at`, in place. False when the lease
/// is no longer this token's.
pub(super) fn retry(
    conn: &Connection,
    seq: i64,
    token: &str,
    next: &Envelope,
    due_at: i64,
) -> rusqlite::Result<bool> {
    let updated = conn
        .prepare_cached(
            "UPDATE messages SET attempt = ?3, first_failed_at = ?4, due_at = ?5, \
             lease_token = NULL, lease_expires_at = NULL, delivery_count = 0 \
             WHERE seq = ?1 AND lease_token = ?2",
        )?
        .execute(params![
            seq,
            token,
            next.attempt,
            next.first_failed_at,
            due_at
        ])?;
    Ok(updated == 1)
}

/// Dead-letter a leased message. False when the lease is no longer this token's.
pub(super) fn bury(
    conn: &Connection,
    seq: i64,
    token: &str,
    failure: &Failure,
    now: i64,
) -> rusqlite::Result<bool> {
    let held = conn
        .prepare_cached("SELECT 1 FROM messages WHERE seq = ?1 AND lease_token = ?2")?
        .exists(params![seq, token])?;
    if held {
        mark_dead(conn, seq, failure, now)?;
    }
    Ok(held)
}

fn mark_dead(conn: &Connection, seq: i64, failure: &Failure, now: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE messages SET state = 'dead', dead_reason = ?2, last_status = ?3, \
         last_error = ?4, dead_at = ?5, lease_token = NULL, lease_expires_at = NULL \
         WHERE seq = ?1",
    )?
    .execute(params![
        seq,
        failure.reason,
        failure.status,
        failure.error,
        now
    ])?;
    Ok(())
}

/// What became of a message given back unsettled.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Released {
    /// Due again now; its next delivery says `redelivered`.
    Ready,
    /// It had reached the delivery limit and is now a dead letter.
    Dead,
    /// The lease is no longer this token's: nothing changed.
    Lost,
}

/// Give a leased message back unsettled, due now and keeping its delivery count, or dead-letter
/// it when that count has reached `delivery_limit` (0 for no limit).
pub(super) fn release(
    conn: &Connection,
    seq: i64,
    token: &str,
    delivery_limit: u32,
    now: i64,
) -> rusqlite::Result<Released> {
    let deliveries: Option<u32> = conn
        .prepare_cached("SELECT delivery_count FROM messages WHERE seq = ?1 AND lease_token = ?2")?
        .query_row(params![seq, token], |row| row.get(0))
        .optional()?;
    let Some(deliveries) = deliveries else {
        return Ok(Released::Lost);
    };
    if delivery_limit > 0 && deliveries >= delivery_limit {
        mark_dead(conn, seq, &over_limit(deliveries), now)?;
        return Ok(Released::Dead);
    }
    conn.prepare_cached(
        "UPDATE messages SET due_at = ?2, lease_token = NULL, lease_expires_at = NULL \
         WHERE seq = ?1",
    )?
    .execute(params![seq, now])?;
    Ok(Released::Ready)
}

fn over_limit(deliveries: u32) -> Failure {
    Failure::new(
        DELIVERY_LIMIT_REASON,
        None,
        format!("delivered {deliveries} times without being settled"),
    )
}

/// The SQL condition selecting the dead letters of a direction that a filter matches: the same
/// rule as [`DeadFilter::matches`].
fn dead_condition(direction: Direction, filter: &DeadFilter) -> (String, Vec<Value>) {
    let mut sql = String::from("direction = ? AND state = 'dead'");
    let mut values = vec![Value::Text(direction.as_str().to_owned())];
    if !filter.ids.is_empty() {
        sql.push_str(" AND message_id IN (SELECT value FROM json_each(?))");
        let ids = filter
            .ids
            .iter()
            .map(|id| serde_json::Value::String(id.clone()))
            .collect::<Vec<_>>();
        values.push(Value::Text(serde_json::Value::Array(ids).to_string()));
    }
    if let Some(reason) = &filter.reason {
        sql.push_str(" AND dead_reason = ?");
        values.push(Value::Text(reason.clone()));
    }
    if let Some(source) = filter.source {
        sql.push_str(" AND source = ?");
        values.push(Value::Text(source.routing_key().to_owned()));
    }
    if let Some(since) = filter.since {
        sql.push_str(" AND dead_at >= ?");
        values.push(Value::Integer(since));
    }
    if let Some(until) = filter.until {
        sql.push_str(" AND dead_at < ?");
        values.push(Value::Integer(until));
    }
    (sql, values)
}

/// The matching dead letters, oldest first.
pub(super) fn dead_letters(
    conn: &Connection,
    direction: Direction,
    filter: &DeadFilter,
) -> rusqlite::Result<Vec<DeadLetter>> {
    let (condition, values) = dead_condition(direction, filter);
    let mut select = conn.prepare(&format!(
        "SELECT dead_reason, last_status, last_error, dead_at, {ENVELOPE_COLUMNS} \
         FROM messages WHERE {condition} ORDER BY dead_at, seq"
    ))?;
    let rows = select.query_map(params_from_iter(values), |row| {
        let status: Option<i64> = row.get(1)?;
        Ok(DeadLetter {
            reason: row.get::<_, Option<String>>(0)?.unwrap_or_default(),
            status: status.and_then(|s| u16::try_from(s).ok()),
            error: row.get::<_, Option<String>>(2)?.unwrap_or_default(),
            dead_at: row.get::<_, Option<i64>>(3)?.unwrap_or_default(),
            envelope: envelope_at(row, 4)?,
        })
    })?;
    rows.collect()
}

/// The row numbers of the matching dead letters, oldest first.
pub(super) fn dead_seqs(
    conn: &Connection,
    direction: Direction,
    filter: &DeadFilter,
) -> rusqlite::Result<Vec<i64>> {
    let (condition, values) = dead_condition(direction, filter);
    let mut select = conn.prepare(&format!(
        "SELECT seq FROM messages WHERE {condition} ORDER BY dead_at, seq"
    ))?;
    let rows = select.query_map(params_from_iter(values), |row| row.get(0))?;
    rows.collect()
}

/// The SET clause that turns a dead letter into [`Envelope::replayed`], due at `?1`.
const REPLAY_SET: &str = "state = 'ready', due_at = ?1, attempt = 1, first_failed_at = NULL, \
     delivery_count = 0, lease_token = NULL, lease_expires_at = NULL, dead_reason = NULL, \
     last_status = NULL, last_error = NULL, dead_at = NULL";

/// Replay every matching dead letter at once. Returns how many were replayed.
pub(super) fn replay_matching(
    conn: &Connection,
    direction: Direction,
    filter: &DeadFilter,
    now: i64,
) -> rusqlite::Result<usize> {
    let (condition, mut values) = dead_condition(direction, filter);
    // ?1 in the SET clause comes first, so the condition's anonymous placeholders number on.
    values.insert(0, Value::Integer(now));
    conn.execute(
        &format!("UPDATE messages SET {REPLAY_SET} WHERE {condition}"),
        params_from_iter(values),
    )
}

/// Replay one dead letter, if it is still dead.
pub(super) fn replay_one(conn: &Connection, seq: i64, now: i64) -> rusqlite::Result<bool> {
    let updated = conn.execute(
        &format!("UPDATE messages SET {REPLAY_SET} WHERE seq = ?2 AND state = 'dead'"),
        params![now, seq],
    )?;
    Ok(updated == 1)
}

/// Delete every matching dead letter. Returns how many were deleted.
pub(super) fn purge(
    conn: &Connection,
    direction: Direction,
    filter: &DeadFilter,
) -> rusqlite::Result<usize> {
    let (condition, values) = dead_condition(direction, filter);
    conn.execute(
        &format!("DELETE FROM messages WHERE {condition}"),
        params_from_iter(values),
    )
}

/// How many messages of a direction wait, are in flight, and are dead.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Depth {
    pub ready: u64,
    pub in_flight: u64,
    pub dead: u64,
}

/// Count a direction's messages through the partial indexes (no table scan for ready and dead).
pub(super) fn depth(conn: &Connection, direction: Direction) -> rusqlite::Result<Depth> {
    let count = |sql: &str| -> rusqlite::Result<u64> {
        conn.prepare_cached(sql)?
            .query_row([direction.as_str()], |row| row.get::<_, i64>(0))
            .map(|n| n.max(0) as u64)
    };
    let ready = count("SELECT COUNT(*) FROM messages WHERE direction = ?1 AND state = 'ready'")?;
    let in_flight =
        count("SELECT COUNT(*) FROM messages WHERE direction = ?1 AND lease_token IS NOT NULL")?;
    let dead = count("SELECT COUNT(*) FROM messages WHERE direction = ?1 AND state = 'dead'")?;
    Ok(Depth {
        ready: ready.saturating_sub(in_flight),
        in_flight,
        dead,
    })
}

/// Refresh the `ccsync_queue_depth{direction,state}` gauges.
pub(super) fn record_depth(conn: &Connection) -> rusqlite::Result<()> {
    for direction in Direction::ALL {
        let depth = depth(conn, direction)?;
        for (state, value) in [
            ("ready", depth.ready),
            ("in_flight", depth.in_flight),
            ("dead", depth.dead),
        ] {
            metrics::gauge!(
                "ccsync_queue_depth",
                "direction" => direction.as_str(),
                "state" => state
            )
            .set(value as f64);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        conn
    }

    fn envelope(source: Source, id: &str) -> Envelope {
        Envelope {
            message_id: id.to_owned(),
            ..Envelope::new(source, Bytes::from_static(b"{}"), None)
        }
    }

    /// Dead letters with every combination the filters look at.
    fn seed(conn: &Connection) {
        let cases = [
            ("a", Source::CustomerioReporting, "no_identity", 1_000),
            ("b", Source::CustomerioEvents, "no_identity", 2_000),
            ("c", Source::CustomerioReporting, "upstream_rejected", 3_000),
            ("d", Source::CustomerioProfiles, "upstream_rejected", 4_000),
            ("e", Source::ChameleonWebhook, "no_identity", 2_000),
        ];
        for (id, source, reason, at) in cases {
            insert(conn, &envelope(source, id), 0).unwrap();
            let seq = conn.last_insert_rowid();
            mark_dead(conn, seq, &Failure::new(reason, Some(422), "bad"), at).unwrap();
        }
        insert(conn, &envelope(Source::CustomerioEvents, "ready"), 0).unwrap();
    }

    fn filters() -> Vec<DeadFilter> {
        let mut all = vec![DeadFilter::default()];
        for ids in [
            vec![],
            vec!["a".to_owned()],
            vec!["b".to_owned(), "d".to_owned(), "x".to_owned()],
        ] {
            for reason in [
                None,
                Some("no_identity".to_owned()),
                Some("other".to_owned()),
            ] {
                for source in [
                    None,
                    Some(Source::CustomerioReporting),
                    Some(Source::ChameleonWebhook),
                ] {
                    for (since, until) in [
                        (None, None),
                        (Some(2_000), None),
                        (None, Some(3_000)),
                        (Some(2_000), Some(4_000)),
                    ] {
                        all.push(DeadFilter {
                            ids: ids.clone(),
                            reason: reason.clone(),
                            source,
                            since,
                            until,
                        });
                    }
                }
            }
        }
        all
    }

    #[test]
    fn sql_filter_agrees_with_dead_filter_matches() {
        let conn = memory();
        seed(&conn);
        let everything = dead_letters(&conn, Direction::Inbound, &DeadFilter::default()).unwrap();
        assert_eq!(
            everything.len(),
            4,
            "the outbound one and the ready one are not listed"
        );
        for filter in filters() {
            let by_sql: Vec<String> = dead_letters(&conn, Direction::Inbound, &filter)
                .unwrap()
                .into_iter()
                .map(|d| d.envelope.message_id)
                .collect();
            let by_rule: Vec<String> = everything
                .iter()
                .filter(|d| filter.matches(d))
                .map(|d| d.envelope.message_id.clone())
                .collect();
            assert_eq!(by_sql, by_rule, "filter {filter:?}");
            assert_eq!(
                dead_seqs(&conn, Direction::Inbound, &filter).unwrap().len(),
                by_rule.len()
            );
        }
    }

    #[test]
    fn replay_and_purge_use_the_same_filter() {
        let conn = memory();
        seed(&conn);
        let filter = DeadFilter {
            reason: Some("no_identity".to_owned()),
            since: Some(1_500),
            ..DeadFilter::default()
        };
        assert_eq!(
            replay_matching(&conn, Direction::Inbound, &filter, 5).unwrap(),
            1
        );
        let left = dead_letters(&conn, Direction::Inbound, &DeadFilter::default()).unwrap();
        let ids: Vec<&str> = left
            .iter()
            .map(|d| d.envelope.message_id.as_str())
            .collect();
        assert_eq!(ids, ["a", "c", "d"]);
        let purge_filter = DeadFilter {
            source: Some(Source::CustomerioReporting),
            ..DeadFilter::default()
        };
        assert_eq!(purge(&conn, Direction::Inbound, &purge_filter).unwrap(), 2);
        assert_eq!(
            depth(&conn, Direction::Inbound).unwrap(),
            Depth {
                ready: 2,
                in_flight: 0,
                dead: 1
            }
        );
        assert_eq!(
            depth(&conn, Direction::Outbound).unwrap(),
            Depth {
                ready: 0,
                in_flight: 0,
                dead: 1
            }
        );
    }
}
