//! Request paths for logs and traces. The Customer.io endpoint token is a path segment, and a
//! misconfigured sender may put it anywhere in a path (a doubled slash, another case), so every
//! segment that is not one of the receiver's own route words is masked before a path reaches a
//! log line.

/// What a masked segment prints as.
pub const MASK: &str = "***";

/// Path segments that can never be secret.
const ROUTE_WORDS: [&str; 11] = [
    "v1",
    "customerio",
    "chameleon",
    "webhooks",
    "reporting",
    "profiles",
    "companies",
    "events",
    "healthz",
    "readyz",
    "metrics",
];

/// `/v1/customerio/<token>/reporting` -> `/v1/customerio/***/reporting`; any segment that is
/// not a route word is masked the same way.
pub fn mask_path(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.is_empty() || ROUTE_WORDS.contains(&segment) {
                segment
            } else {
                MASK
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_segment_that_could_be_a_token() {
        assert_eq!(
            mask_path("/v1/customerio/s3cr3t/reporting"),
            "/v1/customerio/***/reporting"
        );
        assert_eq!(mask_path("/v1/customerio/s3cr3t"), "/v1/customerio/***");
        assert_eq!(
            mask_path("/v1/chameleon/webhooks"),
            "/v1/chameleon/webhooks"
        );
        assert_eq!(mask_path("/healthz"), "/healthz");
        for odd in [
            "//v1/customerio/s3cr3t/reporting",
            "/v1//customerio/s3cr3t/reporting",
            "/V1/customerio/s3cr3t/profiles",
            "/v1/customerio//s3cr3t/profiles",
            "/s3cr3t",
        ] {
            let masked = mask_path(odd);
            assert!(!masked.contains("s3cr3t"), "{odd} -> {masked}");
        }
    }
}
