//! Integration tests of the Chameleon client against a fake Chameleon (wiremock): what is sent,
//! how answers are classified, and how the rate budget and `429` pauses hold requests back.

mod calls;
mod errors;
mod rate_limit;

use std::time::Duration;

use chameleon_api::{ChameleonClient, ChameleonConfig};
use serde_json::{Map, Value, json};
use sync_core::Secret;
use wiremock::MockServer;

/// The account secret every test client sends.
pub const SECRET: &str = "acct-secret-7f3a";

/// A client for `server` with a budget fast enough not to slow tests down.
pub fn client(server: &MockServer) -> ChameleonClient {
    client_with(server, |_| {})
}

/// A client for `server` with test defaults changed by `adjust`.
pub fn client_with(
    server: &MockServer,
    adjust: impl FnOnce(&mut ChameleonConfig),
) -> ChameleonClient {
    client_for(server.uri(), adjust)
}

/// A client for the API at `api_url` with test defaults changed by `adjust`.
pub fn client_for(api_url: String, adjust: impl FnOnce(&mut ChameleonConfig)) -> ChameleonClient {
    let mut config = ChameleonConfig {
        api_url,
        account_secret: Secret::new(SECRET),
        requests_per_minute: 60_000,
        max_in_flight: 4,
        timeout: Duration::from_secs(20),
        max_wait: Duration::from_secs(300),
        ..ChameleonConfig::default()
    };
    adjust(&mut config);
    match ChameleonClient::new(config) {
        Ok(client) => client,
        Err(error) => panic!("test client could not be built: {error}"),
    }
}

/// A JSON object literal as a map.
pub fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("expected an object, got {other}"),
    }
}

pub fn profile(uid: &str) -> Map<String, Value> {
    object(json!({"uid": uid, "email": format!("{uid}@example.org"), "plan": "pro"}))
}
