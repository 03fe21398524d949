"""`python -m idstream`: the command line."""

from idstream.cli import main

raise SystemExit(main())
