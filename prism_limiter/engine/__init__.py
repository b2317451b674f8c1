"""The engine: the sans-I/O core, its sync and async drivers, scripts, keys and records."""
