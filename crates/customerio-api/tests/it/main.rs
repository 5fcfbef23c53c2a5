//! Integration tests of the Track client against a fake Customer.io (wiremock): what is sent
//! for v1 events and v2 batches, how answers are classified, and how a `429` pauses the client.

mod answers;
mod calls;

use std::time::Duration;

use customerio_api::{Identifier, Region, TrackClient, TrackConfig, TrackEvent};
use serde_json::{Map, json};
use sync_core::Secret;
use wiremock::MockServer;

pub const SITE_ID: &str = "site-42";
pub const API_KEY: &str = "trk-key-9c1";
/// `Basic` and base64 of `site-42:trk-key-9c1`, worked out by hand.
pub const BASIC: &str = "Basic c2l0ZS00Mjp0cmsta2V5LTljMQ==";

/// A client for `server` with a budget fast enough not to slow tests down.
pub fn client(server: &MockServer) -> TrackClient {
    client_with(server, |_| {})
}

/// A client for `server` with test defaults changed by `adjust`.
pub fn client_with(server: &MockServer, adjust: impl FnOnce(&mut TrackConfig)) -> TrackClient {
    let mut config = TrackConfig {
        track_url: Some(server.uri()),
        region: Region::Us,
        site_id: SITE_ID.to_owned(),
        api_key: Secret::new(API_KEY),
        requests_per_second: 1000,
        timeout: Duration::from_secs(20),
        max_wait: Duration::from_secs(300),
        ..TrackConfig::default()
    };
    adjust(&mut config);
    match TrackClient::new(config) {
        Ok(client) => client,
        Err(error) => panic!("test client could not be built: {error}"),
    }
}

/// A tour event for `identifier`, with a ULID derived from `n`.
pub fn event(identifier: Identifier, n: u32) -> TrackEvent {
    let mut attributes = Map::new();
    attributes.insert("tour_id".to_owned(), json!("6760aa01b2c3d4e5f6a7b801"));
    attributes.insert("tour_name".to_owned(), json!("Billing walkthrough"));
    TrackEvent {
        identifier,
        name: "Exited Tour (Chameleon)".to_owned(),
        id: format!("01JF2R0000ABCDEFGHJKMNP{n:03}"),
        timestamp: 1_764_753_302,
        attributes,
    }
}

pub fn by_id(id: &str, n: u32) -> TrackEvent {
    event(Identifier::Id(id.to_owned()), n)
}
