"""``python -m dbmigrate_runner`` = the ``dbmigrate-runner`` console script."""

from dbmigrate_runner.startup import main

raise SystemExit(main())
