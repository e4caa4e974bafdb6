"""Quality benchmark of issue 13: ``python -m bench.quality --help``."""
