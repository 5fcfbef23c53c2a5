//! The receiver's webhook routes as a client sees them: their paths, a genuine body for each
//! (the sample payloads in `examples/payloads/`), and how to sign a request so that it gets past
//! authentication and the body checks are what decide its answer.

use serde_json::Value;
use sync_core::signature::{sign_chameleon, sign_customerio};

use crate::server::{CHAMELEON_SECRET, CIO_KEY, TOKEN};
use crate::wire::Request;

const REPORTING: &[u8] =
    include_bytes!("../../../../examples/payloads/customerio/reporting-email-opened.json");
const PROFILE: &[u8] =
    include_bytes!("../../../../examples/payloads/customerio/workflow-profile.json");
const COMPANY: &[u8] =
    include_bytes!("../../../../examples/payloads/customerio/workflow-company.json");
const EVENT: &[u8] = include_bytes!("../../../../examples/payloads/customerio/workflow-event.json");
const TOUR_STARTED: &[u8] =
    include_bytes!("../../../../examples/payloads/chameleon/tour-started.json");

/// A webhook route of the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Reporting,
    Profiles,
    Companies,
    Events,
    Chameleon,
}

impl Route {
    pub const ALL: [Route; 5] = [
        Route::Reporting,
        Route::Profiles,
        Route::Companies,
        Route::Events,
        Route::Chameleon,
    ];

    pub fn path(self) -> String {
        match self {
            Route::Reporting => format!("/v1/customerio/{TOKEN}/reporting"),
            Route::Profiles => format!("/v1/customerio/{TOKEN}/profiles"),
            Route::Companies => format!("/v1/customerio/{TOKEN}/companies"),
            Route::Events => format!("/v1/customerio/{TOKEN}/events"),
            Route::Chameleon => "/v1/chameleon/webhooks".to_owned(),
        }
    }

    /// A body the route accepts. The Chameleon one is sent now, so it is within the tolerance.
    pub fn genuine_body(self) -> Vec<u8> {
        match self {
            Route::Reporting => REPORTING.to_vec(),
            Route::Profiles => PROFILE.to_vec(),
            Route::Companies => COMPANY.to_vec(),
            Route::Events => EVENT.to_vec(),
            Route::Chameleon => fresh_chameleon(TOUR_STARTED, now_secs()),
        }
    }

    /// A POST of `body` to this route that passes authentication: the right token, and a valid
    /// signature where the route checks one.
    pub fn authentic(self, body: impl Into<Vec<u8>>) -> Request {
        let body = body.into();
        let request = Request::post(self.path(), body.clone());
        match self {
            Route::Reporting => sign_reporting(request, &now_secs().to_string(), &body),
            Route::Chameleon => request.header(
                "x-chameleon-signature",
                sign_chameleon(CHAMELEON_SECRET, &body),
            ),
            Route::Profiles | Route::Companies | Route::Events => request,
        }
    }
}

/// Add Customer.io reporting signature headers for `timestamp` and `body`.
pub fn sign_reporting(request: Request, timestamp: &str, body: &[u8]) -> Request {
    request
        .header("x-cio-timestamp", timestamp)
        .header("x-cio-signature", sign_customerio(CIO_KEY, timestamp, body))
}

/// A Chameleon webhook like `template` with `sent_at` set to `secs` (and nothing else changed).
pub fn fresh_chameleon(template: &[u8], secs: i64) -> Vec<u8> {
    let mut webhook: Value = serde_json::from_slice(template).expect("a sample webhook");
    webhook["sent_at"] = Value::String(sync_core::time::format_ms(secs * 1000));
    serde_json::to_vec(&webhook).expect("serialise the webhook")
}

/// The sample Chameleon webhook, sent `secs`.
pub fn tour_started_at(secs: i64) -> Vec<u8> {
    fresh_chameleon(TOUR_STARTED, secs)
}

pub fn now_secs() -> i64 {
    sync_core::time::now_ms() / 1000
}
