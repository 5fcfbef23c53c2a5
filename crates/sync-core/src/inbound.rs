//! Customer.io -> Chameleon mapping (the worker's rules, DESIGN §5).
