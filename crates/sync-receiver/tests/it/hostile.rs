//! Hostile input against every webhook route: a few hundred generated requests with bad bodies
//! (random bytes, wrong JSON types, huge numbers, deep nesting, control characters, invalid
//! UTF-8, truncation, oversize), wrong content types, garbage signatures and timestamps, odd path
//! tokens, wrong methods and broken framing. Requests are signed wherever signing matters, so
//! that the body checks are what they meet.
//!
//! Every answer must be a 4xx (the exact one where DESIGN §3 says which), given within the
//! client's deadline; the receiver must still answer `/healthz` afterwards; and nothing may have
//! reached the queue. That last check is made by sending one genuine message per direction at the
//! end and finding it, alone, on its work queue.
//!
//! The generator is seeded: a failure names its seed, and `RECEIVER_HOSTILE_SEED=<seed>` replays
//! the same requests.

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sync_core::Direction;
use sync_core::signature::{sign_chameleon, sign_customerio};

use crate::routes::{Route, fresh_chameleon, now_secs, sign_reporting, tour_started_at};
use crate::server::{self, CHAMELEON_SECRET, Receiver, TOKEN};
use crate::wire::{self, Framing, NoAnswer, Request};

/// The seed used when `RECEIVER_HOSTILE_SEED` is not set.
const DEFAULT_SEED: u64 = 0x00c1_0c4a_3e1e_0f00;

/// The receiver's body limit in this test.
const MAX_BODY: usize = 64 * 1024;

/// The receiver's request timeout in this test: short enough that a request the server is
/// still waiting on is answered `408` well inside the client's deadline.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client waits for an answer before calling it a hang.
const CLIENT_DEADLINE: Duration = Duration::from_secs(45);

/// Requests in flight at once, well under the receiver's concurrency cap.
const IN_FLIGHT: usize = 8;

/// What a hostile request must be answered.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Exactly this status.
    Status(u16),
    /// Any 4xx.
    ClientError,
    /// Any 4xx, or the connection closed without an answer: for a client that stopped sending
    /// halfway, there is nobody left to answer.
    ClientErrorOrClosed,
}

struct Case {
    label: String,
    request: Request,
    expect: Expect,
}

impl Case {
    fn new(label: impl Into<String>, request: Request, expect: Expect) -> Self {
        Self {
            label: label.into(),
            request,
            expect,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_with_4xx_and_queue_nothing() {
    let seed = std::env::var("RECEIVER_HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let receiver = Receiver::start(server::config(MAX_BODY, REQUEST_TIMEOUT)).await;
    let cases = generate(
        &mut StdRng::seed_from_u64(seed),
        receiver.config.max_json_depth,
    );
    let total = cases.len();
    assert!(total >= 300, "only {total} hostile requests were generated");

    let addr = receiver.addr;
    let failures: Vec<String> = futures::stream::iter(cases)
        .map(|case| async move { judge(addr, &case).await })
        .buffer_unordered(IN_FLIGHT)
        .filter_map(|failure| async move { failure })
        .collect()
        .await;
    assert!(
        failures.is_empty(),
        "seed {seed}: {} of {total} hostile requests were mishandled:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // The receiver survived all of it.
    let health = wire::send(addr, &Request::get("/healthz"), CLIENT_DEADLINE)
        .await
        .expect("/healthz answers after the hostile requests");
    assert_eq!(
        health.status, 200,
        "seed {seed}: /healthz answered {}",
        health.head
    );

    // One genuine message per direction must now be the only one on its queue: anything a
    // hostile request had slipped in would be found before it or beside it. Their ids appear in
    // no hostile request, so a slipped-in copy cannot make them look like duplicates either.
    let reporting = with_field(
        &Route::Reporting.genuine_body(),
        "event_id",
        "control-reporting",
    );
    let answer = send_ok(addr, &Route::Reporting.authentic(reporting.clone())).await;
    assert_eq!(
        answer.status, 202,
        "a genuine reporting webhook: {}",
        answer.head
    );
    let webhook = with_field(&Route::Chameleon.genuine_body(), "id", "control-webhook");
    let answer = send_ok(addr, &Route::Chameleon.authentic(webhook.clone())).await;
    assert_eq!(
        answer.status, 200,
        "a genuine chameleon webhook: {}",
        answer.head
    );

    let inbound = receiver.take_only(Direction::Inbound).await;
    assert_eq!(
        inbound.body, reporting,
        "seed {seed}: the inbound queue held another body"
    );
    let outbound = receiver.take_only(Direction::Outbound).await;
    assert_eq!(
        outbound.body, webhook,
        "seed {seed}: the outbound queue held another body"
    );
    for direction in Direction::ALL {
        assert_eq!(
            receiver.dead_letters(direction).await,
            0,
            "{direction} dead letters"
        );
    }
}

/// Send one case; `Some(description)` if it was mishandled.
async fn judge(addr: SocketAddr, case: &Case) -> Option<String> {
    let outcome = wire::send(addr, &case.request, CLIENT_DEADLINE).await;
    let acceptable = match (&outcome, case.expect) {
        // The answers the receiver makes itself carry a JSON `{"error": ...}` body.
        (Ok(answer), Expect::Status(status)) => {
            answer.status == status
                && (status < 400
                    || answer
                        .head
                        .to_ascii_lowercase()
                        .contains("content-type: application/json"))
        }
        (Ok(answer), Expect::ClientError | Expect::ClientErrorOrClosed) => {
            (400..500).contains(&answer.status)
        }
        (Err(NoAnswer::Closed { received }), Expect::ClientErrorOrClosed) => received.is_empty(),
        (Err(_), _) => false,
    };
    if acceptable {
        return None;
    }
    let got = match outcome {
        Ok(answer) => answer.head.lines().next().unwrap_or_default().to_owned(),
        Err(NoAnswer::TimedOut) => format!("no answer within {CLIENT_DEADLINE:?} (hang)"),
        Err(NoAnswer::Closed { received }) => format!("closed after {received:?}"),
        Err(NoAnswer::Io(err)) => format!("socket error: {err}"),
    };
    Some(format!(
        "  {}: expected {:?}, got {got}",
        case.label, case.expect
    ))
}

/// `body` (a JSON object) with `field` set to `value`.
fn with_field(body: &[u8], field: &str, value: &str) -> Vec<u8> {
    let mut object: Value = serde_json::from_slice(body).expect("a sample payload");
    object[field] = Value::String(value.to_owned());
    serde_json::to_vec(&object).expect("serialise the payload")
}

async fn send_ok(addr: SocketAddr, request: &Request) -> wire::Answer {
    wire::send(addr, request, CLIENT_DEADLINE)
        .await
        .expect("an answer to a genuine request")
}

// === the generator ===

fn generate(rng: &mut StdRng, max_depth: usize) -> Vec<Case> {
    let mut cases = Vec::new();
    for route in Route::ALL {
        bad_bodies(rng, route, &mut cases);
        too_deep(route, max_depth, &mut cases);
        wrong_content_types(rng, route, &mut cases);
        oversize(route, &mut cases);
        wrong_methods(route, &mut cases);
    }
    chameleon_shapes(&mut cases);
    reporting_signatures(rng, &mut cases);
    chameleon_signatures(rng, &mut cases);
    path_tokens(&mut cases);
    broken_framing(&mut cases);
    cases
}

/// Bodies that are not a JSON object, sent with valid authentication. The Customer.io routes
/// must call them `400`. On the Chameleon route the signature check reads `sent_at` from the
/// body first, so most of them are `401` there; any 4xx will do.
fn bad_bodies(rng: &mut StdRng, route: Route, cases: &mut Vec<Case>) {
    let expect = match route {
        Route::Chameleon => Expect::ClientError,
        _ => Expect::Status(400),
    };
    let genuine = route.genuine_body();
    let mut bodies: Vec<(String, Vec<u8>)> = Vec::new();

    for i in 0..12 {
        let len = rng.random_range(1..=2048);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        bodies.push((format!("random bytes #{i} ({len} bytes)"), bytes));
    }
    for i in 0..4 {
        let len = rng.random_range(1..=512);
        let text: Vec<u8> = (0..len).map(|_| rng.random_range(0x20..0x7f)).collect();
        bodies.push((format!("random printable text #{i}"), text));
    }

    let mut array = b"[".to_vec();
    array.extend_from_slice(&genuine);
    array.push(b']');
    bodies.push(("the genuine body inside an array".into(), array));
    for json in [
        "[]", "[{}]", "\"text\"", "\"\"", "42", "-1.5e3", "null", "true", "false", "0",
    ] {
        bodies.push((format!("top-level {json}"), json.into()));
    }

    let digits = "9".repeat(5_000);
    for (label, json) in [
        ("exponent overflow", "1e999999".to_owned()),
        ("negative exponent overflow", "-1e999999".to_owned()),
        (
            "float overflow in a field",
            r#"{"uid":"u1","n":1e400}"#.to_owned(),
        ),
        ("5000-digit number", digits.clone()),
        (
            "5000-digit number in a field",
            format!(r#"{{"uid":"u1","n":{digits}.0e99999}}"#),
        ),
    ] {
        bodies.push((format!("huge number: {label}"), json.into_bytes()));
    }

    let deep = 10_000;
    bodies.push((
        "10,000 nested arrays".into(),
        format!("{}{}", "[".repeat(deep), "]".repeat(deep)).into_bytes(),
    ));
    bodies.push((
        "10,000 nested objects".into(),
        format!("{}0{}", r#"{"a":"#.repeat(deep), "}".repeat(deep)).into_bytes(),
    ));
    bodies.push((
        "10,000 unclosed arrays".into(),
        "[".repeat(deep).into_bytes(),
    ));
    bodies.push((
        "10,000 nested objects in a field".into(),
        format!(
            r#"{{"uid":"u1","p":{}0{}}}"#,
            r#"{"a":"#.repeat(deep),
            "}".repeat(deep)
        )
        .into_bytes(),
    ));

    for c in [0x00u8, 0x01, 0x08, 0x0b, 0x0c, 0x1b, 0x1f] {
        let mut in_string = br#"{"uid":"u1","name":"a"#.to_vec();
        in_string.push(c);
        in_string.extend_from_slice(br#"b"}"#);
        bodies.push((format!("control character {c:#04x} in a string"), in_string));
    }
    for c in [0x00u8, 0x0b, 0x0c] {
        let mut between = br#"{"uid":"u1","#.to_vec();
        between.push(c);
        between.extend_from_slice(br#""name":"x"}"#);
        bodies.push((
            format!("control character {c:#04x} between fields"),
            between,
        ));
    }

    for (label, bytes) in [
        (
            "lone continuation byte",
            &br#"{"uid":"u1","name":"\xff"}"#[..],
        ),
        ("overlong slash", br#"{"uid":"u1","name":"\xc0\xaf"}"#),
        (
            "encoded surrogate",
            br#"{"uid":"u1","name":"\xed\xa0\x80"}"#,
        ),
        ("invalid key", br#"{"uid":"u1","\xfe\xff":1}"#),
        (
            "cut multi-byte character",
            br#"{"uid":"u1","name":"\xe2\x82"}"#,
        ),
        ("escaped lone surrogate", br#"{"uid":"u1","name":"\ud800"}"#),
        (
            "escaped surrogates reversed",
            br#"{"uid":"u1","name":"\udc00\ud800"}"#,
        ),
    ] {
        bodies.push((format!("invalid UTF-8: {label}"), bytes.to_vec()));
    }
    for i in 0..3 {
        let mut corrupted = genuine.clone();
        let at = rng.random_range(0..corrupted.len());
        corrupted[at] = 0xff;
        bodies.push((
            format!("genuine body with 0xff at byte {at} (#{i})"),
            corrupted,
        ));
    }

    let last_brace = genuine
        .iter()
        .rposition(|b| *b == b'}')
        .expect("a genuine body ends its object");
    for _ in 0..4 {
        let cut = rng.random_range(0..last_brace);
        bodies.push((
            format!("genuine body cut to {cut} bytes"),
            genuine[..cut].to_vec(),
        ));
    }

    for (label, bytes) in [
        ("empty", &b""[..]),
        ("whitespace", b" \r\n\t "),
        (
            "byte order mark",
            b"\xef\xbb\xbf{\"uid\":\"u1\",\"name\":\"x\"}",
        ),
        (
            "two objects",
            br#"{"uid":"u1","name":"x"}{"uid":"u2","name":"y"}"#,
        ),
        ("extra brace", br#"{"uid":"u1","name":"x"}}"#),
        ("trailing comma", br#"{"uid":"u1","name":"x",}"#),
        ("single quotes", b"{'uid':'u1','name':'x'}"),
        ("bare keys", b"{uid:\"u1\",name:\"x\"}"),
        ("comment", br#"/**/{"uid":"u1","name":"x"}"#),
        ("NaN", br#"{"uid":"u1","name":"x","n":NaN}"#),
        ("Infinity", br#"{"uid":"u1","name":"x","n":Infinity}"#),
        ("leading zero", br#"{"uid":"u1","name":"x","n":01}"#),
        ("bad escape", br#"{"uid":"u1","name":"\x"}"#),
        ("unterminated string", br#"{"uid":"u1","name":"x"#),
        ("missing colon", br#"{"uid" "u1"}"#),
        ("leading NUL", b"\x00{\"uid\":\"u1\",\"name\":\"x\"}"),
        ("trailing NUL", b"{\"uid\":\"u1\",\"name\":\"x\"}\x00"),
    ] {
        bodies.push((label.to_owned(), bytes.to_vec()));
    }

    for (label, body) in bodies {
        // The generator's own check: every body here must really be something other than a
        // JSON object, or the expected answer would be wrong.
        assert!(
            serde_json::from_slice::<serde_json::Map<String, Value>>(&body).is_err(),
            "the generator made a JSON object for {label:?}"
        );
        cases.push(Case::new(
            format!("{route:?}: {label}"),
            route.authentic(body),
            expect,
        ));
    }
}

/// JSON objects that parse, but nest deeper than `max_json_depth`: `400` on every route (a
/// Chameleon body keeps a fresh `sent_at`, so it gets past its signature).
fn too_deep(route: Route, max_depth: usize, cases: &mut Vec<Case>) {
    let levels = max_depth + 8;
    let nested =
        |open: &str, close: &str| format!("{}0{}", open.repeat(levels), close.repeat(levels));
    for (label, value) in [
        ("arrays", nested("[", "]")),
        ("objects", nested(r#"{"a":"#, "}")),
        ("objects and arrays", nested(r#"{"a":["#, "]}")),
    ] {
        let mut body: Value = serde_json::from_slice(&route.genuine_body()).expect("a sample");
        body["deep"] = serde_json::from_str(&value).expect("deep but valid JSON");
        let body = serde_json::to_vec(&body).expect("serialise");
        cases.push(Case::new(
            format!("{route:?}: genuine body with {levels} levels of {label}"),
            route.authentic(body),
            Expect::Status(400),
        ));
    }
}

/// The genuine body, authenticated, under a content type that is not JSON: `400`.
fn wrong_content_types(rng: &mut StdRng, route: Route, cases: &mut Vec<Case>) {
    let random: Vec<u8> = (0..40).map(|_| rng.random_range(0x21..0x7f)).collect();
    let types: [&[u8]; 11] = [
        b"text/plain",
        b"application/x-www-form-urlencoded",
        b"multipart/form-data; boundary=xyz",
        b"application/xml",
        b"application/jsonp",
        b"json",
        b"",
        b"*/*",
        b"application/json, text/plain",
        b"application/json\xff",
        &random,
    ];
    for content_type in types {
        let request = route
            .authentic(route.genuine_body())
            .set_header("content-type", Some(content_type));
        cases.push(Case::new(
            format!(
                "{route:?}: content type {:?}",
                String::from_utf8_lossy(content_type)
            ),
            request,
            Expect::Status(400),
        ));
    }
}

/// Bodies over the limit, with and without `Content-Length`: `413`.
fn oversize(route: Route, cases: &mut Vec<Case>) {
    for size in [MAX_BODY + 1, 4 * MAX_BODY] {
        let pad = "x".repeat(size.saturating_sub(16));
        let body = format!(r#"{{"uid":"u1","pad":"{pad}"}}"#);
        assert!(body.len() > MAX_BODY);
        for framing in [Framing::Length, Framing::Chunked] {
            let request = route.authentic(body.clone()).framing(framing.clone());
            cases.push(Case::new(
                format!("{route:?}: {} bytes, {framing:?}", body.len()),
                request,
                Expect::Status(413),
            ));
        }
    }
    let body = format!(r#"{{"uid":"u1","pad":"{}"}}"#, "x".repeat(MAX_BODY));
    let declared = 16 * MAX_BODY;
    let request = route
        .authentic(body)
        .framing(Framing::CutShort { declared });
    cases.push(Case::new(
        format!("{route:?}: Content-Length {declared}, body stops past the limit"),
        request,
        Expect::ClientErrorOrClosed,
    ));

    let genuine = route.genuine_body();
    let declared = genuine.len() + 100;
    let request = route
        .authentic(genuine)
        .framing(Framing::CutShort { declared });
    cases.push(Case::new(
        format!("{route:?}: Content-Length {declared}, body stops short"),
        request,
        Expect::ClientErrorOrClosed,
    ));
}

/// The genuine body, authenticated, under other methods: `405`, or `400` for a method that is
/// not a token.
fn wrong_methods(route: Route, cases: &mut Vec<Case>) {
    for method in ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"] {
        let mut request = route.authentic(route.genuine_body());
        method.clone_into(&mut request.method);
        cases.push(Case::new(
            format!("{route:?}: method {method}"),
            request,
            Expect::Status(405),
        ));
    }
    let mut request = route.authentic(route.genuine_body());
    request.method = "PO\u{1}ST".to_owned();
    cases.push(Case::new(
        format!("{route:?}: method with a control character"),
        request,
        Expect::ClientError,
    ));
}

/// Chameleon bodies that pass the signature and time checks but are not a webhook: `400`.
fn chameleon_shapes(cases: &mut Vec<Case>) {
    let now = sync_core::time::format_ms(now_secs() * 1000);
    for (label, body) in [
        ("an array holding sent_at", format!(r#"["{now}"]"#)),
        ("only sent_at", format!(r#"{{"sent_at":"{now}"}}"#)),
        (
            "blank kind",
            format!(r#"{{"sent_at":"{now}","id":"w1","kind":" "}}"#),
        ),
        (
            "numeric kind",
            format!(r#"{{"sent_at":"{now}","id":"w1","kind":7}}"#),
        ),
        (
            "array id",
            format!(r#"{{"sent_at":"{now}","id":[],"kind":"tour.started"}}"#),
        ),
        (
            "null id",
            format!(r#"{{"sent_at":"{now}","id":null,"kind":"tour.started"}}"#),
        ),
        (
            "blank id",
            format!(r#"{{"sent_at":"{now}","id":"","kind":"tour.started"}}"#),
        ),
    ] {
        cases.push(Case::new(
            format!("Chameleon: {label}"),
            Route::Chameleon.authentic(body),
            Expect::Status(400),
        ));
    }
}

/// The genuine reporting body with signatures and timestamps that must not verify: `401`.
fn reporting_signatures(rng: &mut StdRng, cases: &mut Vec<Case>) {
    let body = Route::Reporting.genuine_body();
    let now = now_secs();
    let ts = now.to_string();
    let valid = sign_customerio(server::CIO_KEY, &ts, &body);
    let unsigned = || Request::post(Route::Reporting.path(), body.clone());
    let with = |timestamp: &[u8], signature: &[u8]| {
        unsigned()
            .header("x-cio-timestamp", timestamp)
            .header("x-cio-signature", signature)
    };

    let mut requests: Vec<(String, Request)> = vec![
        ("no signature headers".into(), unsigned()),
        (
            "no signature".into(),
            unsigned().header("x-cio-timestamp", ts.clone()),
        ),
        (
            "no timestamp".into(),
            unsigned().header("x-cio-signature", valid.clone()),
        ),
        ("empty signature".into(), with(ts.as_bytes(), b"")),
        (
            "63 hex digits".into(),
            with(ts.as_bytes(), &valid.as_bytes()[..63]),
        ),
        (
            "65 hex digits".into(),
            with(ts.as_bytes(), format!("{valid}0").as_bytes()),
        ),
        (
            "not hex".into(),
            with(ts.as_bytes(), "z".repeat(64).as_bytes()),
        ),
        (
            "sha256= prefix".into(),
            with(ts.as_bytes(), format!("sha256={valid}").as_bytes()),
        ),
        (
            "8 KiB of hex".into(),
            with(ts.as_bytes(), "ab".repeat(4096).as_bytes()),
        ),
        (
            "bytes beyond ASCII".into(),
            with(ts.as_bytes(), b"\xff\xfe\x80abc"),
        ),
        (
            "signed with another key".into(),
            with(
                ts.as_bytes(),
                sign_customerio("other-key", &ts, &body).as_bytes(),
            ),
        ),
        (
            "signed for another second".into(),
            with(
                ts.as_bytes(),
                sign_customerio(server::CIO_KEY, &(now - 1).to_string(), &body).as_bytes(),
            ),
        ),
        (
            "garbage before a valid signature".into(),
            with(ts.as_bytes(), b"garbage").header("x-cio-signature", valid.clone()),
        ),
    ];
    for (label, timestamp) in [
        ("an hour old", (now - 3600).to_string()),
        ("an hour ahead", (now + 3600).to_string()),
        ("zero", "0".to_owned()),
        ("negative", "-5".to_owned()),
        ("exponent", "1.7e9".to_owned()),
        ("hex", "0x6750a1b2".to_owned()),
        ("23 digits", "99999999999999999999999".to_owned()),
        ("empty", String::new()),
        ("milliseconds", (now * 1000).to_string()),
    ] {
        // Correctly signed over the odd timestamp, so only the timestamp is wrong.
        let request = sign_reporting(unsigned(), &timestamp, &body);
        requests.push((format!("timestamp {label}"), request));
    }
    requests.push((
        "timestamp beyond ASCII".into(),
        with(b"\xef\xbc\x91\xef\xbc\x92", valid.as_bytes()),
    ));
    for i in 0..6 {
        let len = rng.random_range(0..=80);
        let hex: String = (0..len)
            .map(|_| char::from(b"0123456789abcdefABCDEF"[rng.random_range(0..22)]))
            .collect();
        requests.push((
            format!("random hex signature #{i}"),
            with(ts.as_bytes(), hex.as_bytes()),
        ));
        let text: Vec<u8> = (0..len).map(|_| rng.random_range(0x21..0x7f)).collect();
        let stamp: Vec<u8> = (0..rng.random_range(1..=12))
            .map(|_| rng.random_range(0x21..0x7f))
            .collect();
        requests.push((
            format!("random signature and timestamp #{i}"),
            with(&stamp, &text),
        ));
    }

    for (label, request) in requests {
        cases.push(Case::new(
            format!("Reporting: {label}"),
            request,
            Expect::Status(401),
        ));
    }
}

/// The genuine Chameleon webhook with signatures or times that must not verify: `401`.
fn chameleon_signatures(rng: &mut StdRng, cases: &mut Vec<Case>) {
    let now = now_secs();
    let body = tour_started_at(now);
    let valid = sign_chameleon(CHAMELEON_SECRET, &body);
    let unsigned = || Request::post(Route::Chameleon.path(), body.clone());
    let with = |signature: &[u8]| unsigned().header("x-chameleon-signature", signature);
    let signed = |body: Vec<u8>| {
        let signature = sign_chameleon(CHAMELEON_SECRET, &body);
        Request::post(Route::Chameleon.path(), body).header("x-chameleon-signature", signature)
    };
    let with_sent_at = |sent_at: Value| {
        let mut webhook: Value = serde_json::from_slice(&body).expect("the sample webhook");
        match sent_at {
            Value::Null => webhook.as_object_mut().map(|o| o.remove("sent_at")),
            other => webhook
                .as_object_mut()
                .map(|o| o.insert("sent_at".into(), other)),
        };
        serde_json::to_vec(&webhook).expect("serialise")
    };

    let mut other_body: Value = serde_json::from_slice(&body).expect("the sample webhook");
    other_body["id"] = Value::String("another-webhook".into());
    let other_signature = sign_chameleon(
        CHAMELEON_SECRET,
        &serde_json::to_vec(&other_body).expect("serialise"),
    );

    let mut requests: Vec<(String, Request)> = vec![
        ("no signature".into(), unsigned()),
        ("empty signature".into(), with(b"")),
        ("63 hex digits".into(), with(&valid.as_bytes()[..63])),
        ("not hex".into(), with("g".repeat(64).as_bytes())),
        (
            "sha256= prefix".into(),
            with(format!("sha256={valid}").as_bytes()),
        ),
        ("bytes beyond ASCII".into(), with(b"\x80\x81\xfe")),
        (
            "signed with another secret".into(),
            with(sign_chameleon("other-secret", &body).as_bytes()),
        ),
        (
            "signature of another body".into(),
            with(other_signature.as_bytes()),
        ),
        (
            "sent an hour ago".into(),
            signed(tour_started_at(now - 3600)),
        ),
        (
            "sent an hour ahead".into(),
            signed(tour_started_at(now + 3600)),
        ),
        ("no sent_at".into(), signed(with_sent_at(Value::Null))),
        (
            "sent_at as a number".into(),
            signed(with_sent_at(Value::from(now))),
        ),
        (
            "sent_at in words".into(),
            signed(with_sent_at(Value::from("yesterday"))),
        ),
        (
            "sent_at empty".into(),
            signed(with_sent_at(Value::from(""))),
        ),
        (
            "sent_at year 10000".into(),
            signed(with_sent_at(Value::from("10000-01-01T00:00:00Z"))),
        ),
        (
            "valid signature over a stale copy".into(),
            with(sign_chameleon(CHAMELEON_SECRET, &fresh_chameleon(&body, now - 3600)).as_bytes()),
        ),
    ];
    for i in 0..6 {
        let len = rng.random_range(0..=80);
        let text: Vec<u8> = (0..len).map(|_| rng.random_range(0x21..0x7f)).collect();
        requests.push((format!("random signature #{i}"), with(&text)));
    }

    for (label, request) in requests {
        cases.push(Case::new(
            format!("Chameleon: {label}"),
            request,
            Expect::Status(401),
        ));
    }
}

/// Paths that are not a route, or carry a wrong or odd token, with a genuine body: `404` (the
/// same answer for a wrong token as for no route), or another 4xx where the path cannot even be
/// read.
fn path_tokens(cases: &mut Vec<Case>) {
    let body = Route::Profiles.genuine_body();
    let upper = TOKEN.to_ascii_uppercase();
    let shorter = &TOKEN[..TOKEN.len() - 1];
    let long = "a".repeat(10_000);
    let mut not_found: Vec<String> = [
        "nope",
        &upper,
        shorter,
        &format!("{TOKEN}x"),
        &format!("{TOKEN}%00"),
        &format!("{TOKEN}%20"),
        &format!("{TOKEN};x"),
        &format!("{}%2F{}", &TOKEN[..3], &TOKEN[3..]),
        "%00",
        "..",
        "%2e%2e",
        "%2F",
        "%E2%82%AC",
        &long,
    ]
    .iter()
    .map(|token| format!("/v1/customerio/{token}/profiles"))
    .collect();
    not_found.extend([
        "/v1/customerio//profiles".to_owned(),
        format!("/v1/customerio/{TOKEN}"),
        format!("/v1/customerio/{TOKEN}/"),
        format!("/v1/customerio/{TOKEN}/unknown"),
        format!("/v1/customerio/{TOKEN}/Profiles"),
        format!("/v1/customerio/{TOKEN}/profiles/extra"),
        format!("/v1/customerio/{TOKEN}/profiles%00"),
        format!("/v1/customerio/{TOKEN}/../{TOKEN}/profiles"),
        format!("//v1/customerio/{TOKEN}/profiles"),
        format!("/V1/customerio/{TOKEN}/profiles"),
        format!("/v1/customerio/nope/profiles?token={TOKEN}"),
        "/v1/chameleon/webhooks/".to_owned(),
        "/v1/chameleon/Webhooks".to_owned(),
        "/v1/chameleon/webhooks%00".to_owned(),
        "/v1/chameleon".to_owned(),
        "/".to_owned(),
    ]);
    for path in not_found {
        let label = format!("path {}", abbreviate(&path));
        cases.push(Case::new(
            label,
            Request::post(path, body.clone()),
            Expect::Status(404),
        ));
    }

    let unreadable: [&[u8]; 7] = [
        b"/v1/customerio/%FF%FE/profiles",
        b"/v1/customerio/to ken/profiles",
        b"/v1/customerio/\xff/profiles",
        b"/v1/customerio/\x01/profiles",
        b"*",
        b"",
        b"http://[::1/v1/chameleon/webhooks",
    ];
    for path in unreadable {
        let label = format!("unreadable path {:?}", String::from_utf8_lossy(path));
        cases.push(Case::new(
            label,
            Request::post(path, body.clone()),
            Expect::ClientError,
        ));
    }
}

/// Requests whose framing or headers are broken: any 4xx.
fn broken_framing(cases: &mut Vec<Case>) {
    let route = Route::Profiles;
    let body = route.genuine_body();
    let raw = |headers: &[(&str, &[u8])], body: &[u8]| {
        let mut request = Request::post(route.path(), body.to_vec()).framing(Framing::AsWritten);
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        request
    };
    let chunked_bad = b"2\r\n[]\r\n0\r\n\r\n";

    let requests: Vec<(&str, Request)> = vec![
        (
            "Content-Length not a number",
            raw(&[("content-length", b"abc")], &body),
        ),
        (
            "negative Content-Length",
            raw(&[("content-length", b"-1")], &body),
        ),
        (
            "two different Content-Lengths",
            raw(&[("content-length", b"2"), ("content-length", b"3")], b"[]"),
        ),
        (
            "Content-Length and chunked",
            raw(
                &[("content-length", b"3"), ("transfer-encoding", b"chunked")],
                chunked_bad,
            ),
        ),
        (
            "transfer coding other than chunked",
            raw(&[("transfer-encoding", b"gzip")], b"[]"),
        ),
        (
            "chunk size not hex",
            raw(
                &[("transfer-encoding", b"chunked")],
                b"zz\r\n[]\r\n0\r\n\r\n",
            ),
        ),
        (
            "chunk size larger than any body",
            raw(
                &[("transfer-encoding", b"chunked")],
                b"ffffffffffffffffff\r\n[]\r\n",
            ),
        ),
        (
            "chunked bad body",
            raw(&[("transfer-encoding", b"chunked")], chunked_bad),
        ),
        (
            "expect 100-continue with a bad body",
            Request::post(route.path(), b"[]".to_vec()).header("expect", "100-continue"),
        ),
        (
            "header name with a control character",
            Request::post(route.path(), b"[]".to_vec()).header("x-b\u{1}d", "1"),
        ),
        (
            "header line without a colon",
            Request::post(route.path(), b"[]".to_vec()).header("x-no-colon\r\nbroken", "1"),
        ),
        (
            "60 KiB header with a bad body",
            Request::post(route.path(), b"[]".to_vec()).header("x-junk", "j".repeat(60 * 1024)),
        ),
    ];
    for (label, request) in requests {
        cases.push(Case::new(
            format!("framing: {label}"),
            request,
            Expect::ClientError,
        ));
    }

    let mut crowded = Request::post(route.path(), b"[]".to_vec());
    for i in 0..150 {
        crowded = crowded.header(&format!("x-crowd-{i}"), "1");
    }
    cases.push(Case::new(
        "framing: 150 headers",
        crowded,
        Expect::ClientError,
    ));
}

fn abbreviate(text: &str) -> String {
    if text.len() <= 80 {
        return text.to_owned();
    }
    let cut = sync_core::truncate::prefix_within(text, 60);
    format!("{cut}... ({} bytes)", text.len())
}

/// A refused signature's answer says what to fix: which timestamp, and by how much it may differ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_signature_names_the_timestamp_to_fix() {
    let config = server::config(64 * 1024, Duration::from_secs(10));
    let tolerance = config.chameleon_signature_tolerance_secs;
    let receiver = Receiver::start(config).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", receiver.addr);
    let hour_ago = now_secs() - 3600;

    let body = Route::Reporting.genuine_body();
    let timestamp = hour_ago.to_string();
    let reporting = http
        .post(format!("{base}{}", Route::Reporting.path()))
        .header("x-cio-timestamp", &timestamp)
        .header(
            "x-cio-signature",
            sign_customerio(server::CIO_KEY, &timestamp, &body),
        )
        .body(body);
    let tour = tour_started_at(hour_ago);
    let chameleon = http
        .post(format!("{base}{}", Route::Chameleon.path()))
        .header(
            "x-chameleon-signature",
            sign_chameleon(CHAMELEON_SECRET, &tour),
        )
        .body(tour);
    for (request, expected) in [
        (reporting, "x-cio-timestamp is more than"),
        (chameleon, "the body's sent_at is more than"),
    ] {
        let answer = request.send().await.expect("an answer");
        assert_eq!(answer.status(), 401);
        let text = answer.text().await.expect("a body");
        assert!(
            text.contains(expected) && text.contains(&format!("{tolerance} s")),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_signature_names_the_header() {
    let receiver = Receiver::start(server::config(64 * 1024, Duration::from_secs(10))).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", receiver.addr);
    let reporting = http
        .post(format!("{base}{}", Route::Reporting.path()))
        .header("x-cio-timestamp", now_secs().to_string())
        .body(Route::Reporting.genuine_body());
    let chameleon = http
        .post(format!("{base}{}", Route::Chameleon.path()))
        .body(tour_started_at(now_secs()));
    for (request, header) in [
        (reporting, "x-cio-signature"),
        (chameleon, "x-chameleon-signature"),
    ] {
        let answer = request.send().await.expect("an answer");
        assert_eq!(answer.status(), 401);
        let text = answer.text().await.expect("a body");
        assert!(
            text.contains(&format!("the {header} header is missing")),
            "{text}"
        );
    }
}
