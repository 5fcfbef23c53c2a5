//! chameleon-api
