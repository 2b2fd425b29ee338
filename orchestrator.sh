#!/usr/bin/env bash
# Claude Code Orchestrator launcher: finds Python, creates venv/ on first use, dispatches a verb.
# All behaviour lives in orchestrator.py; this file only sets up and forwards.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${ORCHESTRATOR_VENV:-$HERE/venv}"
CLAUDE_VERSION="2.1.197"
CODEX_VERSION="0.169.0"
GEMINI_VERSION="0.61.0"
AIDER_VERSION="0.86.2"
VERBS="draft new run single status watch logs stop plan serve clean validate demo setup help"

usage() {
  cat <<'TXT'
usage: ./orchestrator.sh [VERB] [ARGS...]

  draft     have the agent write the plan from a requirements document: draft PRD.md [--append]
  new       write a milestone file from the template: new 2C "Title" [--deps 1A,1B]
  run       run the remaining stages; restarts itself with --resume if it dies (AUTO_RESUME=false: off)
  single    run once, never restart (same flags as run: --stage N, --milestone ID, --resume, --schedule)
  status    where every milestone stands (--json for scripts)
  watch     live dashboard (--refresh N)
  logs      a milestone's agent transcript: logs 1A [-f]
  stop      stop the run, or one milestone: stop [ID]
  plan      the execution plan without running anything; plan 1A prints 1A's prompt
  serve     read-only HTTP status on 127.0.0.1 for other tools (--port N)
  clean     remove the merged worktrees and branches the runner made (--force: unmerged too; --dry-run)
  validate  check milestones and config, run nothing
  demo      run the example plan offline in a scratch repository (no account needed)
  setup     create venv/ and install requirements.txt
  help      this text

Without a verb: an interactive menu (on a terminal). Developers: ./orchestrator.sh test
TXT
}

find_python() {
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3 python; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  echo "error: Python 3.11 or newer is needed; install it (e.g. apt-get install python3) and try again" >&2
  return 2
}

requirements_stamp() { cat "$HERE/requirements.txt" "$HERE"/requirements-dev.txt "$HERE"/requirements-ray.txt 2>/dev/null | cksum | cut -d' ' -f1; }

setup() {
  local dev="${1:-}" python
  python="$(find_python)"
  if [ ! -x "$VENV/bin/python" ]; then
    echo "setting up $VENV (first use) ..." >&2
    "$python" -m venv "$VENV" || {
      echo "error: could not create a virtual environment; on Debian/Ubuntu: apt-get install python3-venv" >&2
      return 2
    }
  fi
  local want=(-r "$HERE/requirements.txt") name=requirements.txt
  # dev: the tests need Ray too (requirements-ray.txt), for the local two-node cluster tests
  [ "$dev" = "dev" ] && want+=(-r "$HERE/requirements-dev.txt" -r "$HERE/requirements-ray.txt") && name=requirements-dev.txt
  local stamp="$VENV/.installed-$name-$(requirements_stamp)"
  if [ ! -f "$stamp" ]; then
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q "${want[@]}" >&2
    touch "$stamp"
  fi
}

install_claude_for_tests() {
  # The integration tests drive the real Claude Code CLI against a fake server on 127.0.0.1.
  [ -n "${CLAUDE_CLI:-}" ] && return 0
  [ -x "$HERE/.tools/claude/node_modules/.bin/claude" ] && return 0
  if ! command -v npm >/dev/null 2>&1; then
    echo "warning: npm not found: the tests that drive the real Claude Code CLI will be skipped" >&2
    return 0
  fi
  echo "installing @anthropic-ai/claude-code@$CLAUDE_VERSION into .tools/claude (for the tests) ..." >&2
  npm install --prefix "$HERE/.tools/claude" --no-audit --no-fund --loglevel=error \
    "@anthropic-ai/claude-code@$CLAUDE_VERSION" >&2
}

install_npm_cli_for_tests() {
  # The tests drive these real agent CLIs against fake servers on 127.0.0.1 too; pinned, in .tools/.
  # Extra npm options follow the spec: Codex ships its binary as an optional dependency
  # (@openai/codex-linux-x64 …), so only Gemini may skip optional (native) packages.
  local name="$1" dir="$HERE/.tools/$1" spec="$2"
  shift 2
  local stamp="$dir/.installed-${spec//\//_}"
  # A stamp alone is not enough: an earlier install may lack the CLI's platform binary.
  [ -f "$stamp" ] && "$dir/node_modules/.bin/$name" --version >/dev/null 2>&1 && return 0
  if ! command -v npm >/dev/null 2>&1; then
    echo "warning: npm not found: the tests that drive the real $spec will be skipped" >&2
    return 0
  fi
  echo "installing $spec into .tools/$name (for the tests) ..." >&2
  npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "$@" "$spec" >&2
  touch "$stamp"
}

install_aider_for_tests() {
  # Aider is a large Python program: its own venv, installed once and reused.
  local dir="$HERE/.tools/aider" python
  [ -n "${AIDER_CLI:-}" ] || [ -f "$dir/.installed-$AIDER_VERSION" ] && return 0
  python="$(find_python)"
  echo "installing aider-chat==$AIDER_VERSION into .tools/aider (for the tests; about a minute) ..." >&2
  "$python" -m venv "$dir"
  "$dir/bin/python" -m pip install --disable-pip-version-check -q "aider-chat==$AIDER_VERSION" >&2
  touch "$dir/.installed-$AIDER_VERSION"
}

install_agents_for_tests() {
  install_claude_for_tests
  [ -n "${CODEX_CLI:-}" ] || install_npm_cli_for_tests codex "@openai/codex@$CODEX_VERSION"
  [ -n "${GEMINI_CLI:-}" ] || install_npm_cli_for_tests gemini "@google/gemini-cli@$GEMINI_VERSION" --omit=optional
  install_aider_for_tests
}

py() { setup && exec "$VENV/bin/python" "$HERE/orchestrator.py" "$@"; }

menu() {
  echo "Claude Code Orchestrator: choose what to do"
  PS3="number> "
  select verb in $VERBS quit; do
    case "$verb" in
      quit | "") exit 0 ;;
      logs)
        read -r -p "milestone id: " id
        dispatch logs "$id" -f
        ;;
      draft)
        read -r -p "requirements document (e.g. PRD.md): " prd
        dispatch draft "$prd"
        ;;
      new)
        read -r -p "milestone id (e.g. 2C): " id
        read -r -p "title: " title
        dispatch new "$id" "$title"
        ;;
      stop | plan)
        read -r -p "milestone id (empty: the whole run or plan): " id
        dispatch "$verb" ${id:+"$id"}
        ;;
      *) dispatch "$verb" ;;
    esac
    return
  done
}

dispatch() {
  local verb="$1"
  shift
  case "$verb" in
    run) py run --auto-resume "$@" ;;
    single) py run "$@" ;;
    draft | new | status | watch | logs | stop | plan | serve | clean | validate | demo) py "$verb" "$@" ;;
    setup) setup && echo "ready: $VENV" ;;
    test)
      setup dev && install_agents_for_tests
      cd "$HERE" && exec "$VENV/bin/python" -m pytest -n 4 "$@"
      ;;
    help | -h | --help) usage ;;
    *)
      echo "error: unknown verb '$verb' (verbs: $VERBS)" >&2
      usage >&2
      exit 2
      ;;
  esac
}

if [ $# -eq 0 ]; then
  if [ -t 0 ] && [ -t 1 ]; then menu; else usage; fi
  exit 0
fi
dispatch "$@"
