//! Chameleon -> Customer.io mapping (the relay's rules, DESIGN §5).
