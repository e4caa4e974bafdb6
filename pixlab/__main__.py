from pixlab.app.cli import main

raise SystemExit(main())
