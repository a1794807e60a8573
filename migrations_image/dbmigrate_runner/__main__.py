"""``python -m dbmigrate_runner`` = the ``dbmigrate-runner`` console script."""

from dbmigrate_runner.cli import main

raise SystemExit(main())
