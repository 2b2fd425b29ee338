"""What each agent CLI prints when it stops for a reason: usage limits, auth, context, transient errors.

The texts are quoted from the real CLIs (the captures of Claude Code 2.1.197, Codex CLI 0.169.0 and
Aider 0.86.2 in the project's shared captures, plus the sources and issues cited next to each
pattern). Each preset's record (orchestrator_lib/presets.py) names its table; orchestrator_lib/limits.py
reads an agent's output with it.
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple

Kind = Literal["ok", "usage_limit", "transient", "auth", "context", "failed"]


class TextPattern(NamedTuple):
    kind: Kind
    regex: re.Pattern[str]


def _p(kind: Kind, pattern: str, flags: int = 0) -> TextPattern:
    return TextPattern(kind, re.compile(pattern, flags))


_APOS = "(?:'|\u2019)"  # You've / You’ve
_DOT = "[\u00b7\u2219\u2022]"  # · (U+00B7), ∙ (U+2219), •

CLAUDE = (
    # Oldest first: "Claude AI usage limit reached|<epoch>", "Claude usage limit
    # reached. Your limit will reset at 3pm (America/Bogota).", "5-hour limit
    # reached ∙ resets 2am", "Limit reached · resets …", "You've hit your session
    # limit · resets 12:30pm (America/Toronto)", "You're out of extra usage · resets 9pm".
    # "limit reached" without "resets" is a model fallback notice, not a stop.
    _p("usage_limit", r"^Claude (?:AI )?usage limit reached\b"),
    _p(
        "usage_limit",
        rf"^(?:[\w-]+ ){{0,3}}limit reached\s*{_DOT}\s*resets\b",
        re.IGNORECASE,
    ),
    _p("usage_limit", rf"^You{_APOS}ve hit your (?:[\w-]+ )?limit\b"),
    _p("usage_limit", rf"^You{_APOS}re out of extra usage\b"),
    # anthropics/claude-code#5151, #6893, #9694, #10712, #84903.
    _p("auth", r"^(?:Invalid|Missing) API key\b"),
    _p("auth", r"^Not logged in\b"),
    _p("auth", r"Please run /login\b"),
    _p("auth", r"\bOAuth token (?:has expired|has been revoked|is invalid)"),
    _p("auth", r"\bauthentication_error\b"),
    _p("auth", r"\bInvalid bearer token\b"),
    _p("auth", r"^40[13] \{"),
    # Captures b1, b13, c1, c3, d1, d3 (result text after "API Error: " is cleaned off).
    _p("transient", r"^Request rejected \(429\)"),
    _p("transient", r"^Server is temporarily limiting requests\b"),
    _p("transient", r"^(?:Repeated )?529 Overloaded\b"),
    _p("transient", r"^Request timed out\.?$"),
    _p("transient", r"^The operation timed out\.?$"),
    _p("transient", r"^Unable to connect to API\b"),
    _p("transient", r"^Connection error\.?$"),
    _p("transient", r"^(?:429|5\d\d) \{"),  # older "API Error: 500 {"type":"error",…}"
)

CODEX = (
    # codex-rs/core/src/error.rs UsageLimitReachedError: "You've hit your usage
    # limit. … or try again at 3:28 PM." / "… Try again at May 11th, 2026 1:36 PM.";
    # 0.27–0.40 said "… or try again in 5 days 22 hours 11 minutes."
    # (openai/codex#3031, #3899); 0.23 "… or wait for limits to reset" (#2669).
    _p("usage_limit", rf"^You{_APOS}ve hit your usage limit\b"),
    # codex-rs/login auth manager; error.rs QuotaExceeded / UsageNotIncluded are
    # billing problems a person has to solve, like a bad login.
    _p("auth", r"^Your access token could not be refreshed\b"),
    _p("auth", r"^unexpected status 401\b"),
    _p("auth", r"^Not (?:logged|signed) in\b"),
    _p("auth", r"^Missing environment variable: `\w*API_KEY`"),
    _p("auth", r"^Quota exceeded\. Check your plan and billing details"),
    _p("auth", r"^To use Codex with your ChatGPT plan, upgrade to Plus"),
    _p("context", r"^Codex ran out of room in the model's context window"),
    # Capture codex_429: "ERROR: exceeded retry limit, last status: 429 Too Many Requests".
    _p("transient", r"^exceeded retry limit, last status: (?:429|5\d\d)\b"),
    _p("transient", r"^unexpected status (?:429|5\d\d)\b"),
    _p("transient", r"^stream disconnected before completion\b"),
    _p("transient", r"^We're currently experiencing high demand\b"),
    _p("transient", r"^Connection failed\b"),
    _p("transient", r"^Error while reading the server response\b"),
)

AIDER = (
    _p("auth", r"^litellm\.AuthenticationError\b"),
    _p("auth", r"^The API provider is not able to authenticate you\b"),
    _p("auth", r"\binsufficient_quota\b"),  # OpenAI: no credit left, not a rate
    # aider base_coder.show_exhausted_error: "Model gpt-4o has hit a token limit!"
    _p("context", r"^litellm\.ContextWindowExceededError\b"),
    _p("context", r"^Model \S+ has hit a token limit!"),
    # Capture aider_429: it retries, then gives up and exits 0 having done nothing.
    _p(
        "transient",
        r"^litellm\.(?:RateLimitError|APIConnectionError|ServiceUnavailableError"
        r"|InternalServerError|Timeout|APIError)\b",
    ),
    _p("transient", r"^The API provider has rate limited you\b"),
    _p("transient", r"^The API provider's servers are down or overloaded\b"),
)

GEMINI = (
    # gemini-cli: "Usage limit reached for gemini-3-flash-preview. Access resets at
    # 10:57 PM GMT-3." (#22643); googleQuotaErrors.ts: "You have exhausted your daily
    # quota on this model." and, before #12386, "Quota exceeded for quota metric …
    # per day …"; Code Assist: "You have exhausted your capacity on this model. Your
    # quota will reset after 12h22m45s."; a retry delay over 300 s is terminal.
    _p("usage_limit", r"^Usage limit reached for\b"),
    _p("usage_limit", r"^You have exhausted your (?:capacity|daily quota)\b"),
    _p(
        "usage_limit",
        r"^Quota exceeded for quota metric\b.*\b(?:per day|daily)\b",
        re.IGNORECASE,
    ),
    _p("usage_limit", r"\bquotaId\"?:\s*\"\w*PerDay"),
    _p("usage_limit", r"\bPlease retry in (?:[3-9]\d\d|\d{4,})(?:\.\d+)?s\b"),
    # Exit code 41 (FatalAuthenticationError) is handled with the other exit codes.
    _p("auth", r"^Please set an Auth method\b"),
    _p("auth", r"^When using Gemini API, you must specify the GEMINI_API_KEY"),
    _p("auth", r"^API key not valid\b"),
    _p("auth", r"\b(?:API_KEY_INVALID|UNAUTHENTICATED)\b"),
    _p("auth", r"^Failed to (?:login|sign in)\b"),
    _p("transient", r"^Please submit a new query to continue with the Flash model"),
    _p("transient", r"^Quota exceeded for quota metric\b"),
    _p("transient", r"^You exceeded your current quota\b"),
    _p("transient", r"\bRESOURCE_EXHAUSTED\b"),
    _p("transient", r"\"status\":\s*\"UNAVAILABLE\""),
    _p("transient", r"\"code\":\s*(?:429|503)\b"),
    _p("transient", r"^got status: (?:429|503)\b"),
    _p("transient", r"^The model is overloaded\b"),
)

GENERIC = (
    # Anthropic API spend limit: "You have reached your specified API usage limits.
    # You will regain access on 2025-07-01 at 00:00 UTC."
    _p("usage_limit", r"You have reached your specified API usage limits"),
    _p("auth", r"\bcredit balance is too low\b", re.IGNORECASE),
    # Claude 2.1.197: "Prompt is too long · the request is ~212345 tokens (limit 200000) …"
    _p("context", rf"^Prompt is too long(?:\s*$|[:.]|\s+{_DOT})", re.IGNORECASE),
    _p("context", r"\bprompt is too long: \d+ tokens"),
    _p("context", r"^Context limit reached\b", re.IGNORECASE),
    _p("context", r"^Conversation compacted\b", re.IGNORECASE),
    _p("context", r"^The conversation is too long\b"),
    _p("context", r"^context window exceeded\b", re.IGNORECASE),
    _p("context", r"\bcontext_length_exceeded\b"),
    _p("context", r"\bmaximum context length is \d+ tokens"),
    _p("context", r"\bexceeds the maximum number of tokens allowed\b"),
)


# geminicli.com/docs/cli/headless: 1 error, 42 input error, 53 turn limit;
# 41 is FatalAuthenticationError ("Please set an Auth method …").
GEMINI_EXIT = ((41, "auth"), (42, "input error"), (53, "turn limit exceeded"))
