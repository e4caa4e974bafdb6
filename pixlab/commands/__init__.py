"""CLI commands, one module each (see pixlab.cli)."""
