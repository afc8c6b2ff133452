"""Providers: spec parsing, the Request/Generation models, one module per wire protocol."""
