"""``python -m campaigns.cli ...``: the same as ``wa-campaigns ...``."""

from campaigns.cli.main import main

raise SystemExit(main())
