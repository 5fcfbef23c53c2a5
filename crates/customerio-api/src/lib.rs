//! customerio-api
