//! Request paths for logs and traces. The Customer.io endpoint token is a path segment, so every
//! path is masked before it reaches a log line.

/// What the token prints as.
pub const MASK: &str = "***";

/// `/v1/customerio/<token>/reporting` -> `/v1/customerio/***/reporting`; other paths unchanged.
pub fn mask_path(path: &str) -> String {
    const PREFIX: &str = "/v1/customerio/";
    match path.strip_prefix(PREFIX) {
        Some(rest) => match rest.split_once('/') {
            Some((_, tail)) => format!("{PREFIX}{MASK}/{tail}"),
            None => format!("{PREFIX}{MASK}"),
        },
        None => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_the_token_segment_only() {
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
    }
}
