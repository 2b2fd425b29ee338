"""`python -m orchestrator_lib`: the same command line as `python orchestrator.py` and the installed
`orchestrator` command. An entry point above every layer: it runs orchestrator.py as a script
rather than importing it, so no module of this package imports the top of the layers."""

import runpy

runpy.run_module("orchestrator", run_name="__main__")  # sys.argv[0] stays: help says `python -m orchestrator_lib`
