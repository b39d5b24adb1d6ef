"""``python -m synthray`` is the ``synthray`` command."""

from synthray.cli import main

raise SystemExit(main())
