"""The Redactor masks .env values, secret-named variables and key shapes; strip_controls cleans terminal text."""

from __future__ import annotations

import dataclasses
import time

import pytest

from orchestrator_lib.redact import DOTENV_MARKER, SECRET_MARKER, Redactor, looks_secret, strip_controls, strip_line

ANTHROPIC = "sk-ant-api03-" + "A1b2C3d4" * 6
DOTENV_VALUE = "hunter2-but-longer"


def redactor(environ: dict[str, str] | None = None, dotenv: dict[str, str | None] | None = None) -> Redactor:
    return Redactor.from_environment(environ or {}, dotenv or {})


class TestSources:
    def test_dotenv_values_are_masked_with_their_own_marker(self) -> None:
        r = redactor(dotenv={"WHATEVER": DOTENV_VALUE})
        assert r.mask(f"password is {DOTENV_VALUE}!") == f"password is {DOTENV_MARKER}!"

    @pytest.mark.parametrize(
        "name",
        ["ANTHROPIC_API_KEY", "GITHUB_TOKEN", "CLIENT_SECRET", "DB_PASSWORD", "MYPASSWORDX", "CLAUDE_CODE_OAUTH_TOKEN",
         "AWS_SECRET_ACCESS_KEY", "KEY", "OPENAI_API_KEY", "api_key"],
    )  # fmt: skip
    def test_secret_named_variables_are_masked(self, name: str) -> None:
        r = redactor(environ={name: "value-of-the-secret"})
        assert r.mask("x value-of-the-secret y") == f"x {SECRET_MARKER} y"

    @pytest.mark.parametrize("name", ["HOME", "PATH", "KEYBOARD_LAYOUT", "MONKEYPATCH", "TERM", "LANG"])
    def test_other_variables_are_not(self, name: str) -> None:
        assert not looks_secret(name)
        assert redactor(environ={name: "/home/someone/bin"}).mask("/home/someone/bin") == "/home/someone/bin"

    def test_values_shorter_than_eight_characters_are_not_masked(self) -> None:
        r = redactor(environ={"MY_TOKEN": "1234567"}, dotenv={"DEBUG": "1", "MODE": "short"})
        assert r.mask("1234567 1 short") == "1234567 1 short"
        assert redactor(environ={"MY_TOKEN": "12345678"}).mask("12345678") == SECRET_MARKER

    def test_an_empty_dotenv_value_is_ignored(self) -> None:
        assert redactor(dotenv={"EMPTY": "", "NONE": None}).mask("plain text") == "plain text"

    def test_a_longer_value_containing_a_shorter_one_is_masked_whole(self) -> None:
        r = redactor(dotenv={"A": "abcdefgh", "B": "abcdefgh-and-more"})
        assert r.mask("abcdefgh-and-more") == DOTENV_MARKER

    def test_a_value_is_also_masked_as_json_escapes_it(self) -> None:
        value = 'quote"and\\slash'
        r = redactor(dotenv={"V": value})
        assert value not in r.mask(value)
        assert 'quote\\"and\\\\slash' not in r.mask('{"text": "quote\\"and\\\\slash"}')

    def test_regex_characters_in_values_are_literal(self) -> None:
        r = redactor(dotenv={"V": "a.b*c+d?e(f)"})
        assert r.mask("a.b*c+d?e(f) aXbbbc+d?e(f)") == f"{DOTENV_MARKER} aXbbbc+d?e(f)"


class TestShapes:
    @pytest.mark.parametrize(
        "key",
        [
            ANTHROPIC,
            "sk-proj-" + "x" * 40,
            "sk-" + "Z9" * 20,
            "ghp_" + "a1" * 18,
            "gho_" + "B2" * 18,
            "github_pat_11ABCDEFG0" + "x" * 60,
            "AKIAIOSFODNN7EXAMPLE",
            "xoxb-1234567890-abcdefghij",
            "xoxp-1234567890-abcdefghij",
        ],
    )
    def test_well_known_keys_are_masked_without_being_configured(self, key: str) -> None:
        assert redactor().mask(f"key={key}; next") == f"key={SECRET_MARKER}; next"
        assert redactor().mask(f'{{"result": "{key}"}}') == f'{{"result": "{SECRET_MARKER}"}}'

    @pytest.mark.parametrize("text", ["task-list-of-many-things-here", "sk-short", "ask-me-anything-please", "AKIA"])
    def test_ordinary_words_are_left_alone(self, text: str) -> None:
        assert redactor().mask(text) == text


class TestFind:
    def test_find_names_line_column_kind_and_masks_the_line(self) -> None:
        r = redactor(dotenv={"MY_TOKEN": DOTENV_VALUE})
        text = f"first line\ntoken = '{DOTENV_VALUE}'\nkey = {ANTHROPIC}\n"
        leaks = r.find(text)
        assert [(leak.line, leak.column) for leak in leaks] == [(2, 10), (3, 7)]
        assert leaks[0].kind == "a value from .env (MY_TOKEN)"
        assert leaks[1].kind == "an Anthropic API key"
        assert leaks[0].masked_line == f"token = '{DOTENV_MARKER}'"
        assert all(DOTENV_VALUE not in leak.masked_line and ANTHROPIC not in leak.masked_line for leak in leaks)

    def test_clean_text_has_no_leaks(self) -> None:
        assert redactor(dotenv={"A": DOTENV_VALUE}).find("nothing to see\nhere") == []


class TestImmutability:
    def test_a_redactor_cannot_be_changed(self) -> None:
        r = redactor(dotenv={"A": DOTENV_VALUE})
        with pytest.raises(dataclasses.FrozenInstanceError):
            r.values = {}  # type: ignore[misc]
        with pytest.raises(TypeError):
            r.values["x" * 10] = "added"  # type: ignore[index]

    def test_masking_is_fast_enough_for_every_output_line(self) -> None:
        r = redactor(environ={f"KEY_{i}_TOKEN": f"value-number-{i:04d}" for i in range(50)}, dotenv={"A": DOTENV_VALUE})
        line = '{"type":"assistant","message":{"content":[{"type":"text","text":"' + "ordinary words " * 20 + '"}]}}'
        started = time.perf_counter()
        for _ in range(2000):
            r.mask(line)
        assert time.perf_counter() - started < 5  # generous bound for a loaded machine; bench/ has the figure


class TestControls:
    @pytest.mark.parametrize(
        ("raw", "clean"),
        [
            ("\x1b[31mred\x1b[0m", "red"),
            ("\x1b]0;pwned title\x07after", "after"),
            ("\x1b]8;;http://evil.example\x1b\\link\x1b]8;;\x1b\\", "link"),
            ("bell\x07nul\x00", "bellnul"),
            ("\x9b31mc1 csi", "c1 csi"),
            ("c1\x85next\x8d", "c1next"),
            ("\x1b(Bcharset", "charset"),
            ("\x1bcreset", "reset"),
            ("tab\tand\nnewline", "tab\tand\nnewline"),
            ("über ✓ 日本", "über ✓ 日本"),
            ("\x1b[2J\x1b[Hclear", "clear"),
            ("del\x7f", "del"),
        ],
    )
    def test_escape_sequences_and_controls_are_stripped(self, raw: str, clean: str) -> None:
        assert strip_controls(raw) == clean

    def test_strip_line_keeps_one_line(self) -> None:
        assert strip_line("a\r\nb\nc\rd\x1b[1m") == "a b c d"

    def test_clean_strips_before_masking_so_escapes_cannot_split_a_key(self) -> None:
        split = ANTHROPIC[:10] + "\x1b[0m" + ANTHROPIC[10:]
        assert redactor().clean(split) == SECRET_MARKER
