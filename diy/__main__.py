"""`python -m diy COMMAND ...`: the same as the `diy-wsgi` command."""
from diy.cli import main

raise SystemExit(main())
