"""Policy: the TOML document, its storage in Redis, and its compiled rules."""
