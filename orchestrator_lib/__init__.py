"""Claude Code Orchestrator internals: plan, agents, state and rendering.

`orchestrator.py` (CLI and workflow) and `advanced.py` (rate limits, system
monitor, worktrees, validation) are the readable homes of their concerns; this
package holds the rest. Imports go one way: nothing here imports orchestrator.py or advanced.py
except the workflow parts above advanced.py (pipeline, integration) and the entry point __main__,
which runs orchestrator.py as a script.
"""

__version__ = "0.1.0"
