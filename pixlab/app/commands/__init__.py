"""CLI commands, one module each (see pixlab.app.cli)."""
