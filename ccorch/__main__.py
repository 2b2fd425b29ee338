"""`python -m ccorch`: the same command line as `python orchestrator.py` and the installed
`orchestrator` command. This file is an entry point (nothing imports it), the top of the layers."""

from orchestrator import main

raise SystemExit(main())
