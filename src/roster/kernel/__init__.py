"""The pure domain: spec models, workflow contracts and audit-chain arithmetic. No I/O lives here."""
