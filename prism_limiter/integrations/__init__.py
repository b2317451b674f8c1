"""Integrations: HTTP headers for decisions and the tag header."""
