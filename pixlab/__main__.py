"""``python -m pixlab``: the command line (:func:`pixlab.app.cli.main`)."""

from pixlab.app.cli import main

raise SystemExit(main())
