"""Allow ``python -m watcher`` as well as the ``zoho-job-watcher`` console script."""

from watcher.cli import main

raise SystemExit(main())
