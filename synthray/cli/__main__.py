"""``python -m synthray.cli`` is the ``synthray`` command too."""

from synthray.cli import main

raise SystemExit(main())
