from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from orchestrator_lib.limits import (
    AgentReport,
    Classification,
    Kind,
    classify,
    last_line,
    parse_reset,
    read_report,
)

# Saturday 2026-11-21 09:00 in Paris (UTC+1) is 08:00 UTC: 03:00 in Bogota and
# Toronto, 08:00 in Lisbon, 13:30 in Kolkata, 00:00 in Los Angeles.
NOW = datetime(2026, 11, 21, 9, 0, tzinfo=ZoneInfo("Europe/Paris"))
DATA = Path(__file__).parent / "data" / "limits"


def at(year: int, month: int, day: int, hour: int, minute: int = 0, zone: str = "UTC") -> float:
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone)).timestamp()


def capture(name: str) -> tuple[int, str]:
    folder = DATA / name
    output = (folder / "stdout.txt").read_text() + (folder / "stderr.txt").read_text()
    return int((folder / "rc.txt").read_text()), output


def line(**event: Any) -> str:
    return json.dumps(event)


def result(text: str, *, is_error: bool = False, status: int | None = None, **extra: Any) -> str:
    return line(
        type="result",
        subtype=extra.pop("subtype", "success"),
        is_error=is_error,
        api_error_status=status,
        num_turns=1,
        result=text,
        session_id="s-1",
        total_cost_usd=0,
        usage={"input_tokens": 0, "output_tokens": 0},
        **extra,
    )


def assistant(text: str, model: str = "claude-opus-4-8") -> str:
    message = {
        "model": model,
        "role": "assistant",
        "content": [{"type": "text", "text": text}],
    }
    return line(type="assistant", message=message, session_id="s-1")


def tool_result(text: str) -> str:
    content = [{"type": "tool_result", "tool_use_id": "t1", "content": text}]
    return line(type="user", message={"role": "user", "content": content})


def stream(*lines: str) -> str:
    init = line(type="system", subtype="init", session_id="s-1", model="claude-opus-4-8")
    return "\n".join((init, *lines)) + "\n"


# --------------------------------------------------------------- usage limits

USAGE_LIMITS = [
    # Claude Code, oldest wording first; the reset is written in the zone the text implies.
    ("claude", "Claude AI usage limit reached|1750708800", 1750708800.0),
    (
        "claude",
        "Claude usage limit reached. Your limit will reset at 3pm (America/Bogota).",
        at(2026, 11, 21, 15, zone="America/Bogota"),
    ),
    # 2am local has passed today: tomorrow.
    (
        "claude",
        "5-hour limit reached \u2219 resets 2am",
        at(2026, 11, 22, 2, zone="Europe/Paris"),
    ),
    # 11:30 in Kolkata passed two hours ago; the legacy alias resolves.
    (
        "claude",
        "Limit reached \u00b7 resets 11:30am (Asia/Calcutta) \u00b7 /upgrade to Max\u2026",
        at(2026, 11, 22, 11, 30, zone="Asia/Kolkata"),
    ),
    (
        "claude",
        "Limit reached \u00b7 resets Dec 17 at 6am (Europe/Oslo)",
        at(2026, 12, 17, 6, zone="Europe/Oslo"),
    ),
    (
        "claude",
        "You've hit your limit \u00b7 resets 1pm (Europe/Lisbon)",
        at(2026, 11, 21, 13, zone="Europe/Lisbon"),
    ),
    (
        "claude",
        "You've hit your session limit \u00b7 resets 12:30pm (America/Toronto)",
        at(2026, 11, 21, 12, 30, zone="America/Toronto"),
    ),
    (
        "claude",
        "You've hit your weekly limit \u00b7 resets Nov 23, 2:52pm (UTC)",
        at(2026, 11, 23, 14, 52),
    ),
    (
        "claude",
        "You're out of extra usage \u00b7 resets 9pm",
        at(2026, 11, 21, 21, zone="Europe/Paris"),
    ),
    (
        "claude",
        "You\u2019ve hit your session limit \u00b7 resets 4pm (Europe/Paris)",
        at(2026, 11, 21, 16, zone="Europe/Paris"),
    ),
    # Same texts through the generic presets.
    (
        "command",
        "You've hit your limit \u00b7 resets 1pm (Europe/Lisbon)",
        at(2026, 11, 21, 13, zone="Europe/Lisbon"),
    ),
    (
        "demo",
        "5-hour limit reached \u2219 resets 2am",
        at(2026, 11, 22, 2, zone="Europe/Paris"),
    ),
    # Anthropic API spend limit (any agent talking to the API with a key).
    (
        "aider",
        (
            "litellm.BadRequestError: AnthropicException - You have reached your specified API "
            "usage limits. You will regain access on 2026-12-01 at 00:00 UTC."
        ),
        at(2026, 12, 1, 0),
    ),
    # Codex CLI: codex-rs/core/src/error.rs and openai/codex#3031, #3899, #2669.
    (
        "codex",
        (
            "ERROR: You've hit your usage limit. Upgrade to Pro (https://openai.com/chatgpt/pricing)"
            " or try again in 5 days 22 hours 11 minutes."
        ),
        at(2026, 11, 27, 6, 11),
    ),
    (
        "codex",
        (
            "You've hit your usage limit. Visit https://chatgpt.com/codex/settings/usage to "
            "purchase more credits or try again at 3:28 PM."
        ),
        at(2026, 11, 21, 15, 28, zone="Europe/Paris"),
    ),
    (
        "codex",
        (
            "You've hit your usage limit. Upgrade to Plus to continue using Codex "
            "(https://chatgpt.com/explore/plus), or try again at Nov 23rd, 2026 2:52 PM."
        ),
        at(2026, 11, 23, 14, 52, zone="Europe/Paris"),
    ),
    (
        "codex",
        (
            "\u25a0 You've hit your usage limit. Upgrade to Pro (https://openai.com/chatgpt/pricing),"
            " or wait for limits to reset (every 5h and every week.)."
        ),
        None,
    ),
    # Gemini CLI: #22643, googleQuotaErrors.ts; daily quotas reset at midnight Pacific.
    (
        "gemini",
        "Usage limit reached for gemini-3-flash-preview. Access resets at 10:57 PM GMT-3.",
        at(2026, 11, 21, 22, 57, zone="America/Sao_Paulo"),
    ),
    (
        "gemini",
        ("\u2715 [API Error: You have exhausted your capacity on this model. Your quota will reset after 12h22m45s.]"),
        at(2026, 11, 21, 20, 22) + 45,
    ),
    (
        "gemini",
        "\u2715 [API Error: You have exhausted your daily quota on this model.]",
        at(2026, 11, 22, 0, zone="America/Los_Angeles"),
    ),
    (
        "gemini",
        (
            "\u2715 [API Error: Quota exceeded for quota metric 'Gemini 2.5 Pro Requests' and limit "
            "'Gemini 2.5 Pro Requests per day per user per tier' of service 'cloudcode-pa.googleapis.com'"
            " for consumer 'project_number:681255809395'. Expected quota reset within 24h.]"
        ),
        at(2026, 11, 22, 0, zone="America/Los_Angeles"),
    ),
]


@pytest.mark.parametrize(("preset", "text", "reset"), USAGE_LIMITS)
def test_usage_limit_texts_with_their_reset(preset: str, text: str, reset: float | None) -> None:
    found = classify(preset, 1, f"some earlier output\n{text}\n", NOW)
    assert found == Classification("usage_limit", reset, text, reset_exact="|" in text)


@pytest.mark.parametrize(("preset", "text", "reset"), USAGE_LIMITS[:10])
def test_claude_limit_as_error_result_and_synthetic_message(preset: str, text: str, reset: float | None) -> None:
    output = stream(assistant(text, model="<synthetic>"), result(text, is_error=True, status=429))
    assert classify(preset, 1, output, NOW) == Classification("usage_limit", reset, text, reset_exact="|" in text)


def test_old_limit_reported_as_a_success_with_exit_0() -> None:
    output = result("Claude AI usage limit reached|1750708800") + "\n"
    assert classify("claude", 0, output, NOW) == Classification(
        "usage_limit", 1750708800.0, "Claude AI usage limit reached|1750708800", reset_exact=True
    )


def test_gemini_limit_split_over_two_lines() -> None:
    output = "Usage limit reached for all Pro models.\nAccess resets at 11:00 AM GMT+2.\n"
    found = classify("gemini", 1, output, NOW)
    assert found == Classification(
        "usage_limit",
        at(2026, 11, 21, 11, zone="Europe/Athens"),
        "Usage limit reached for all Pro models.",
    )


def test_gemini_long_retry_delay_is_a_limit_and_short_one_is_not() -> None:
    long = "You exceeded your current quota. Please retry in 51820.6s."
    short = "You exceeded your current quota. Please retry in 34.074824224s."
    assert classify("gemini", 1, long, NOW) == Classification("usage_limit", NOW.timestamp() + 51820.6, long)
    assert classify("gemini", 1, short, NOW) == Classification("transient", None, short)


def test_codex_json_events() -> None:
    text = "You've hit your usage limit. Try again at 3:05 PM."
    agent = {"type": "agent_message", "text": "Retry on usage limit reached is done."}
    output = "\n".join(
        [
            line(type="thread.started", thread_id="t-1"),
            line(type="item.completed", item=agent),
            line(type="error", message=text),
            line(type="turn.failed", error={"message": text}),
        ]
    )
    reset = at(2026, 11, 21, 15, 5, zone="Europe/Paris")
    assert classify("codex", 1, output, NOW) == Classification("usage_limit", reset, text)
    assert classify("codex", 0, "\n".join(output.splitlines()[:2]), NOW) == Classification(
        "ok", None, "Retry on usage limit reached is done."
    )


def test_gemini_pretty_printed_json_error() -> None:
    text = "You have exhausted your daily quota on this model."
    error = {"type": "TerminalQuotaError", "message": text, "code": 429}
    output = json.dumps({"session_id": "g-1", "error": error}, indent=2)
    reset = at(2026, 11, 22, 0, zone="America/Los_Angeles")
    assert classify("gemini", 1, output, NOW) == Classification("usage_limit", reset, text)


# --------------------------------------------------------------- parse_reset

PARSE_RESET = [
    ("Claude AI usage limit reached|1750708800", 1750708800.0),
    ("resets 2am", at(2026, 11, 22, 2, zone="Europe/Paris")),
    ("resets 12:30pm", at(2026, 11, 21, 12, 30, zone="Europe/Paris")),
    ("resets 12am", at(2026, 11, 22, 0, zone="Europe/Paris")),
    ("resets 14:05", at(2026, 11, 21, 14, 5, zone="Europe/Paris")),
    # Printed times are floored to the minute: one just passed has lifted, not tomorrow.
    ("resets 8:30am", at(2026, 11, 21, 8, 30, zone="Europe/Paris")),
    ("resets 3pm (America/Bogota)", at(2026, 11, 21, 15, zone="America/Bogota")),
    ("resets 3pm (Mars/Olympus_Mons)", at(2026, 11, 21, 15, zone="Europe/Paris")),
    ("resets Dec 17 at 6am (Europe/Oslo)", at(2026, 12, 17, 6, zone="Europe/Oslo")),
    ("resets Nov 23, 2:52pm (UTC)", at(2026, 11, 23, 14, 52)),
    # Without a year: this year, next year only when over a day in the past.
    ("resets Nov 20, 9pm", at(2026, 11, 20, 21, zone="Europe/Paris")),
    ("resets Nov 19 at 6am", at(2027, 11, 19, 6, zone="Europe/Paris")),
    ("resets Jan 3 at 6am (Europe/Oslo)", at(2027, 1, 3, 6, zone="Europe/Oslo")),
    ("Access resets at 9:00 PM PST.", at(2026, 11, 21, 21, zone="America/Los_Angeles")),
    (
        "try again in 2 days 3 hours 5 minutes",
        NOW.timestamp() + 2 * 86400 + 3 * 3600 + 5 * 60,
    ),
    ("try again in less than a minute", NOW.timestamp() + 60),
    ("You will regain access on 2026-12-01 at 00:00 UTC.", at(2026, 12, 1, 0)),
    ("Try again later.", None),
    ("resets soon", None),
    ("the limit resets 2 times a day", None),
]


@pytest.mark.parametrize(("text", "expected"), PARSE_RESET)
def test_parse_reset(text: str, expected: float | None) -> None:
    assert parse_reset(text, NOW) == expected


def test_parse_reset_uses_the_zone_of_now_for_local_times() -> None:
    tokyo = NOW.astimezone(ZoneInfo("Asia/Tokyo"))  # same instant, 17:00 in Tokyo
    assert parse_reset("resets 9pm", tokyo) == at(2026, 11, 21, 21, zone="Asia/Tokyo")


def test_parse_reset_needs_an_aware_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_reset("resets 9pm", datetime(2026, 11, 21, 9, 0))


# --------------------------------------------------------------- transient / auth / context

TRANSIENT = [
    (
        "claude",
        (
            "API Error: Request rejected (429) \u00b7 This request would exceed the rate limit "
            "for your organization (fake) of 50 requests per minute."
        ),
    ),
    (
        "claude",
        ("API Error: Server is temporarily limiting requests (not your usage limit) \u00b7 Please try again later."),
    ),
    (
        "claude",
        ("API Error: 529 Overloaded. This is a server-side issue, usually temporary \u2014 try again in a moment."),
    ),
    (
        "claude",
        ("API Error: Repeated 529 Overloaded errors. The API is at capacity \u2014 this is usually temporary."),
    ),
    ("claude", "Request timed out"),
    ("claude", "API Error: The operation timed out."),
    ("claude", "API Error: Unable to connect to API (ConnectionRefused)"),
    (
        "claude",
        'API Error: 500 {"type":"error","error":{"type":"api_error","message":"Internal server error"}}',
    ),
    (
        "command",
        "API Error: 529 Overloaded. This is a server-side issue, usually temporary.",
    ),
    ("codex", "ERROR: exceeded retry limit, last status: 429 Too Many Requests"),
    (
        "codex",
        "ERROR: exceeded retry limit, last status: 503 Service Unavailable, request id: r-1",
    ),
    (
        "codex",
        "We're currently experiencing high demand, which may cause temporary errors.",
    ),
    (
        "aider",
        "litellm.RateLimitError: RateLimitError: OpenAIException - Rate limit reached for",
    ),
    ("aider", "litellm.ServiceUnavailableError: AnthropicException - Overloaded"),
    (
        "gemini",
        (
            '[API Error: {"error":{"code":429,"message":"Resource has been exhausted (e.g. check '
            'quota).","status":"RESOURCE_EXHAUSTED"}}]'
        ),
    ),
    (
        "gemini",
        (
            '[API Error: {"error":{"code":503,"message":"The model is overloaded. Please try '
            'again later.","status":"UNAVAILABLE"}}]'
        ),
    ),
]

AUTH = [
    ("claude", "Invalid API key \u00b7 Please run /login"),
    ("claude", "Invalid API key \u00b7 Fix external API key"),
    ("claude", "Not logged in \u00b7 Please run /login"),
    (
        "claude",
        (
            'API Error: 401 {"type":"error","error":{"type":"authentication_error","message":'
            '"OAuth token has expired. Please obtain a new token or refresh your existing token."}} '
            "\u00b7 Please run /login"
        ),
    ),
    (
        "claude",
        ('API Error: 401 {"type":"error","error":{"type":"authentication_error","message":"Invalid bearer token"}}'),
    ),
    ("claude", "Credit balance is too low"),
    (
        "codex",
        (
            "ERROR: Your access token could not be refreshed because your refresh token has "
            "expired. Please log out and sign in again."
        ),
    ),
    (
        "codex",
        "ERROR: unexpected status 401 Unauthorized: Missing bearer or basic authentication",
    ),
    ("codex", "ERROR: Quota exceeded. Check your plan and billing details."),
    (
        "aider",
        "litellm.AuthenticationError: AuthenticationError: OpenAIException - Incorrect API key",
    ),
    (
        "aider",
        (
            "litellm.RateLimitError: OpenAIException - You exceeded your current quota, please "
            "check your plan and billing details. {'code': 'insufficient_quota'}"
        ),
    ),
    (
        "gemini",
        (
            "Please set an Auth method in your /home/u/.gemini/settings.json or specify one of "
            "the following environment variables before running: GEMINI_API_KEY"
        ),
    ),
    ("gemini", "[API Error: API key not valid. Please pass a valid API key.]"),
]

CONTEXT = [
    ("claude", "Prompt is too long"),
    (
        "claude",  # 2.1.197, on a 400 "prompt is too long: 212345 tokens > 200000 maximum"
        (
            "Prompt is too long \u00b7 the request is ~212345 tokens (limit 200000) but this conversation is only "
            "~1535 tokens \u2014 the rest is system prompt, tool definitions, and attachment content."
        ),
    ),
    (
        "claude",
        (
            'API Error: 400 {"type":"error","error":{"type":"invalid_request_error","message":'
            '"prompt is too long: 210000 tokens > 200000 maximum"}}'
        ),
    ),
    ("claude", "Context limit reached \u00b7 /compact or /clear to continue"),
    ("command", "Conversation compacted \u00b7 ctrl+o for history"),
    ("command", "Error: context window exceeded"),
    ("command", "The conversation is too long for this model."),
    (
        "codex",
        (
            "ERROR: Codex ran out of room in the model's context window. Start a new conversation"
            " or clear earlier history before retrying."
        ),
    ),
    ("aider", "Model openai/gpt-4o has hit a token limit!"),
    (
        "aider",
        ("litellm.ContextWindowExceededError: This model's maximum context length is 8192 tokens."),
    ),
    (
        "gemini",
        ("The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."),
    ),
]


@pytest.mark.parametrize(
    ("kind", "preset", "text"),
    [("transient", *c) for c in TRANSIENT] + [("auth", *c) for c in AUTH] + [("context", *c) for c in CONTEXT],
)
def test_error_texts(kind: Kind, preset: str, text: str) -> None:
    found = classify(preset, 1, f"working...\n{text}\n", NOW)
    assert found == Classification(kind, None, text)


@pytest.mark.parametrize(("kind", "preset", "text"), [("transient", *TRANSIENT[0]), ("auth", *AUTH[0])])
def test_error_texts_in_a_claude_error_result(kind: str, preset: str, text: str) -> None:
    output = stream(result(text, is_error=True)) + "\n"
    assert classify(preset, 1, output, NOW).kind == kind


def test_aider_giving_up_with_exit_0_is_transient() -> None:
    rc, output = capture("aider_429")
    assert rc == 0
    assert classify("aider", rc, output, NOW) == Classification(
        "transient",
        None,
        "The API provider has rate limited you. Try again later or check your quotas.",
    )


# --------------------------------------------------------------- the captures


@pytest.mark.parametrize(
    ("name", "preset", "kind", "reset"),
    [
        ("a_success", "claude", "ok", None),
        ("e_stream", "claude", "ok", None),
        ("b1_429_default", "claude", "transient", None),
        ("b6_429_streamjson_r2", "claude", "transient", None),
        ("b13_429_oauth_plain_r0", "claude", "transient", None),
        ("c1_529_default", "claude", "transient", None),
        ("c3_529_nosandbox", "claude", "transient", None),
        ("c5_529_streamjson_r2", "claude", "transient", None),
        ("d1_hang_t5_r2", "claude", "transient", None),
        ("d3_hangstream_r1", "claude", "transient", None),
        ("codex_429", "codex", "transient", None),
        ("aider_429", "aider", "transient", None),
        ("b11_429_oauth_unified", "claude", "usage_limit", at(2026, 11, 21, 8, 18)),
        ("b14_429_oauth_weekly_r0", "claude", "usage_limit", at(2026, 11, 23, 14, 52)),
        # resetsAt from the rate_limit_event, to the second (the text says 7:37am).
        ("oauth_limit_streamjson", "claude", "usage_limit", 1795246673.0),
    ],
)
def test_captures(name: str, preset: str, kind: str, reset: float | None) -> None:
    rc, output = capture(name)
    found = classify(preset, rc, output, NOW)
    assert (found.kind, found.reset_at) == (kind, reset)
    # Each capture ends with the text it reports (last_line cuts at 200, message at 300).
    assert found.message.startswith(last_line(output).rstrip("\u2026"))


def test_capture_messages_are_the_error_text() -> None:
    assert classify("claude", *capture("b13_429_oauth_plain_r0"), NOW).message.startswith(
        "API Error: Server is temporarily limiting requests (not your usage limit)"
    )
    assert classify("codex", *capture("codex_429"), NOW).message == (
        "ERROR: exceeded retry limit, last status: 429 Too Many Requests"
    )


def test_rate_limit_event_without_resets_at_takes_the_time_from_the_text() -> None:
    event = line(
        type="rate_limit_event",
        rate_limit_info={"status": "rejected", "rateLimitType": "seven_day"},
    )
    text = "You've hit your weekly limit \u00b7 resets Nov 23, 2:52pm (UTC)"
    output = stream(event, result(text, is_error=True, status=429))
    assert classify("claude", 1, output, NOW) == Classification("usage_limit", at(2026, 11, 23, 14, 52), text)


def test_rate_limit_event_alone_is_a_limit_of_unknown_end() -> None:
    event = line(
        type="rate_limit_event",
        rate_limit_info={"status": "rejected", "rateLimitType": "five_hour"},
    )
    assert classify("claude", 1, stream(event), NOW) == Classification(
        "usage_limit", None, "usage limit reached (five_hour)"
    )


# --------------------------------------------------------------- negatives

NEGATIVES = [
    # Assistant prose in stream-json is the model talking, never the CLI.
    (
        "claude",
        0,
        stream(
            assistant(
                "Milestone 4 adds detection for 'Claude usage limit reached. Your limit will "
                "reset at 3pm' and 'usage limit reached' texts."
            ),
            result("Done: usage limit detection added."),
        ),
    ),
    (
        "claude",
        0,
        stream(
            assistant("You've hit your limit \u00b7 resets 1pm (Europe/Lisbon)"),
            assistant("API Error: 529 Overloaded. This is a server-side issue."),
            result("All tests pass."),
        ),
    ),
    # A tool result quoting an error (a test log, a grep) is not the agent's error.
    (
        "claude",
        0,
        stream(
            tool_result(
                "tests/test_x.py: API Error: Request rejected (429)\nRequest timed out\n"
                "Invalid API key \u00b7 Please run /login"
            ),
            result("Fixed the flaky test."),
        ),
    ),
    (
        "claude",
        0,
        result("I added retry on 429 and a timeout for rate limit errors.") + "\n",
    ),
    # A success result is read only when it is one line, like every CLI-written limit.
    (
        "claude",
        0,
        result("Summary:\nYou've hit your limit \u00b7 resets 1pm is now parsed.\nDone.") + "\n",
    ),
    # With overage on, Claude goes on with extra usage.
    (
        "claude",
        0,
        stream(
            line(
                type="rate_limit_event",
                rate_limit_info={
                    "status": "rejected",
                    "resetsAt": 1795246673,
                    "isUsingOverage": True,
                },
            ),
            result("Created hello.txt with a greeting."),
        ),
    ),
    (
        "claude",
        0,
        stream(
            line(
                type="rate_limit_event",
                rate_limit_info={"status": "allowed_warning", "resetsAt": 1795246673},
            ),
            result("Created hello.txt with a greeting."),
        ),
    ),
    # A model fallback notice is not a stop (no "resets").
    (
        "claude",
        0,
        "Claude Opus limit reached, now using Sonnet 4\n" + result("Done.") + "\n",
    ),
    # Plain text: mentions in the middle of a line do not count.
    (
        "command",
        0,
        (
            "Tests now cover 'Request timed out' and 'API Error: 529 Overloaded'.\n"
            "Also the case where you've hit your limit \u00b7 resets 1pm.\nAll done.\n"
        ),
    ),
    (
        "aider",
        0,
        (
            "I added handling for rate limit errors (429 Too Many Requests) and usage limits.\n"
            "Applied edit to limits.py\n"
        ),
    ),
    # Retried, then recovered.
    (
        "aider",
        0,
        (
            "litellm.RateLimitError: RateLimitError: OpenAIException - Rate limit reached for\n"
            "The API provider has rate limited you. Try again later or check your quotas.\n"
            "Retrying in 0.2 seconds...\nApplied edit to hello.txt\n"
            "Tokens: 2.1k sent, 40 received.\n"
        ),
    ),
    # Codex echoes the prompt: a milestone about limits is not a limit.
    (
        "codex",
        0,
        (
            "OpenAI Codex v0.169.0\n--------\nuser\nDetect texts like:\n"
            "You've hit your usage limit. Try again at 3:05 PM.\n"
            "exceeded retry limit, last status: 429 Too Many Requests\n"
            "codex\nDone: added the detector.\ntokens used\n1234\n"
        ),
    ),
]


@pytest.mark.parametrize(("preset", "rc", "output"), NEGATIVES)
def test_mentions_are_not_limits(preset: str, rc: int, output: str) -> None:
    assert classify(preset, rc, output, NOW) == Classification("ok", None, last_line(output))


def test_mention_in_a_failing_run_is_a_plain_failure() -> None:
    output = stream(
        assistant("Retry on 429 and 'usage limit reached' are handled."),
        result("Tests failed: 3 errors", is_error=True),
    )
    assert classify("claude", 1, output, NOW) == Classification("failed", None, "Tests failed: 3 errors")


# --------------------------------------------------------------- results and exit codes


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            result("", is_error=True, subtype="error_max_turns"),
            Classification("failed", None, "error_max_turns"),
        ),
        (
            result("", is_error=True, subtype="error_max_budget_usd"),
            Classification("failed", None, "error_max_budget_usd"),
        ),
        (
            result("boom", is_error=True, subtype="error_during_execution"),
            Classification("failed", None, "error_during_execution: boom"),
        ),
        (
            result("API Error: 403 Forbidden", is_error=True, status=403),
            Classification("auth", None, "API Error: 403 Forbidden"),
        ),
        (
            result("API Error: 429", is_error=True, status=429),
            Classification("transient", None, "API Error: 429"),
        ),
        (
            result("", is_error=True, status=502),
            Classification("transient", None, "API error 502"),
        ),
        (
            result("Something unexpected", is_error=True),
            Classification("failed", None, "Something unexpected"),
        ),
    ],
)
def test_result_objects(event: str, expected: Classification) -> None:
    assert classify("claude", 1, event + "\n", NOW) == expected


@pytest.mark.parametrize(
    ("preset", "rc", "output", "expected"),
    [
        ("command", 0, "built\nall good\n", Classification("ok", None, "all good")),
        (
            "command",
            2,
            "Traceback (most recent call last):\nKeyError: 'x'\n",
            Classification("failed", None, "KeyError: 'x'"),
        ),
        ("command", 2, "", Classification("failed", None, "exit code 2")),
        (
            "gemini",
            41,
            "Please log in.\n",
            Classification("auth", None, "Please log in."),
        ),
        (
            "gemini",
            42,
            "Invalid prompt\n",
            Classification("failed", None, "input error (exit 42): Invalid prompt"),
        ),
        (
            "gemini",
            53,
            "",
            Classification("failed", None, "turn limit exceeded (exit 53)"),
        ),
        (
            "gemini",
            1,
            "Error: something broke\n",
            Classification("failed", None, "Error: something broke"),
        ),
    ],
)
def test_exit_codes(preset: str, rc: int, output: str, expected: Classification) -> None:
    assert classify(preset, rc, output, NOW) == expected


def test_unknown_preset_is_refused() -> None:
    with pytest.raises(ValueError, match="claude, codex, aider, gemini, command, demo"):
        classify("copilot", 0, "", NOW)


def test_message_is_one_line_of_at_most_300_chars() -> None:
    text = "Request rejected (429) \u00b7 " + "x" * 400
    found = classify("claude", 1, result(f"API Error: {text}", is_error=True, status=429), NOW)
    assert found.kind == "transient"
    assert len(found.message) == 300 and found.message.startswith("API Error: Request rejected (429)")


# --------------------------------------------------------------- watchdog


@pytest.mark.parametrize(
    ("preset", "output", "expected"),
    [
        (
            "claude",
            stream(assistant("Working on it")),
            Classification("transient", None, "killed by watchdog"),
        ),
        (
            "claude",
            stream(line(type="system", subtype="api_retry", attempt=1, error_status=429)),
            Classification("transient", None, "killed by watchdog"),
        ),
        (
            "command",
            "Prompt is too long\n",
            Classification("transient", None, "killed by watchdog"),
        ),
        (
            "command",
            "Not logged in \u00b7 Please run /login\n",
            Classification("auth", None, "Not logged in \u00b7 Please run /login"),
        ),
        (
            "claude",
            capture("oauth_limit_streamjson")[1],
            Classification(
                "usage_limit",
                1795246673.0,
                "You've hit your session limit \u00b7 resets 7:37am (UTC)",
                reset_exact=True,
            ),
        ),
    ],
)
def test_killed_by_watchdog(preset: str, output: str, expected: Classification) -> None:
    assert classify(preset, None, output, NOW) == expected


# --------------------------------------------------------------- read_report / last_line


def test_read_report_json_capture() -> None:
    assert read_report(capture("a_success")[1]) == AgentReport(
        session_id="79a4dad0-5414-466a-9f99-68ecebe65f8b",
        cost_usd=0.019299999999999998,
        input_tokens=3475,
        output_tokens=77,
        num_turns=2,
        result_text="Created hello.txt with a greeting.",
        is_error=False,
        api_error_status=None,
    )


def test_read_report_stream_json_capture() -> None:
    report = read_report(capture("e_stream")[1])
    assert (
        report.session_id,
        report.cost_usd,
        report.input_tokens,
        report.output_tokens,
    ) == (
        "27c4a305-c7ff-4115-96b3-81d28e149142",
        0.019299999999999998,
        3475,
        77,
    )
    assert (report.num_turns, report.is_error) == (2, False)


def test_read_report_error_capture() -> None:
    report = read_report(capture("b11_429_oauth_unified")[1])
    assert (report.is_error, report.api_error_status, report.cost_usd) == (
        True,
        429,
        0.0,
    )
    assert report.result_text == "You've hit your session limit \u00b7 resets 8:18am (UTC)"


def test_read_report_counts_cached_input_tokens() -> None:
    usage = {
        "input_tokens": 10,
        "cache_creation_input_tokens": 200,
        "cache_read_input_tokens": 3000,
        "output_tokens": 5,
    }
    output = line(type="result", subtype="success", is_error=False, usage=usage, total_cost_usd=1)
    report = read_report("noise\n" + output + "\n")
    assert (report.input_tokens, report.output_tokens, report.cost_usd) == (
        3210,
        5,
        1.0,
    )


def test_read_report_takes_the_last_result() -> None:
    output = result("first", session_id_unused=1) + "\n" + line(type="result", result="second", num_turns=7)
    report = read_report(output)
    assert (report.result_text, report.num_turns, report.session_id) == (
        "second",
        7,
        None,
    )


@pytest.mark.parametrize("output", ["", "plain text only\n", assistant("hi") + "\n", "{not json\n"])
def test_read_report_without_result_is_empty(output: str) -> None:
    assert read_report(output) == AgentReport(None, None, None, None, None, None, None, None)


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (capture("e_stream")[1], "Created hello.txt with a greeting."),
        (stream(assistant("First step done."), tool_result("ok")), "First step done."),
        (stream(assistant("one\ntwo\n\n")), "two"),
        ("compiling\n  linking  \n\n", "linking"),
        ("", ""),
        (line(type="system", subtype="init") + "\n", ""),
        ("x" * 500, "x" * 199 + "\u2026"),
    ],
)
def test_last_line(output: str, expected: str) -> None:
    assert last_line(output) == expected
