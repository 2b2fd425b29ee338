"""The prompts each role gets: the milestone, its sections, and the runner's rules."""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator_lib.plan import Milestone

RULES = """\
Rules from the orchestrator:
- Work only inside this directory (a git worktree made for this milestone): {worktree}
- Do the Tasks below and meet every Exit Criterion; the runner checks them after you finish.
- Do not switch branches, rebase, merge or push. The runner commits your changes for you.
- Do not write secrets (API keys, tokens, the contents of .env) into any file.
"""


def implement(m: Milestone, worktree: str, note: str = "", setting: str = "") -> str:
    """`setting`: the task's own ports and slug (worktree_prep.Isolation.note)."""
    parts = [
        f"You are implementing milestone {m.id}: {m.title}.",
        RULES.format(worktree=worktree),
        *([setting, ""] if setting else []),
    ]
    if note:
        parts.append(note)
    parts += ["The milestone file follows.", "", m.text.strip(), ""]
    return "\n".join(parts)


def resume_note(kind: str, committed: Sequence[str]) -> str:
    """What a fresh attempt is told about the work it inherits."""
    text = f"Note: an earlier attempt at this milestone was interrupted ({kind})."
    if committed:
        text += " These files already hold its work; continue from them, do not start over: " + ", ".join(
            committed[:40]
        )
    return text


def continue_after_limit() -> str:
    return (
        "The usage limit that interrupted you has lifted. Continue the same task from where you "
        "stopped; check the files in the worktree first."
    )


def continue_after_error(error: str) -> str:
    return (
        f"Your previous run stopped on an error ({error[:200]}). Continue the same task from where "
        "you stopped; check the files in the worktree first."
    )


def review(m: Milestone, worktree: str, diff: str, review_file: str) -> str:
    return "\n".join(
        [
            f"You are reviewing the work done for milestone {m.id}: {m.title}.",
            f"The work is in this directory: {worktree}. Do NOT modify any file: you only review.",
            "Check that the Tasks are done, the Exit Criteria are met, and the code is correct, safe and tidy.",
            "You may read files and run the tests. Any change you make is thrown away.",
            "Give your verdict as this JSON object:",
            '  {"verdict": "pass" or "fail", "findings": ["one finding per entry, concrete and actionable"]}',
            f"- write it to {review_file} (with a shell command if you have no file-editing tool),",
            "- or, if you have a StructuredOutput tool, call it with that object,",
            "- or else end your answer with your findings, one per line starting with `- `, then a last line",
            "  that is exactly `VERDICT: PASS` or `VERDICT: FAIL`.",
            "",
            "The milestone file:",
            m.text.strip(),
            "",
            "The change under review (diff against the stage base):",
            diff,
        ]
    )


def remediate(m: Milestone, worktree: str, findings: Sequence[str], check_output: str, setting: str = "") -> str:
    parts = [
        f"You are fixing milestone {m.id}: {m.title}. A review or a check found problems.",
        RULES.format(worktree=worktree),
        *([setting, ""] if setting else []),
    ]
    if findings:
        parts += ["Review findings (verbatim):", *[f"- {f}" for f in findings], ""]
    if check_output:
        parts += ["Failing check output (verbatim):", check_output.strip(), ""]
    parts += ["Fix every one of them. The milestone file follows.", "", m.text.strip(), ""]
    return "\n".join(parts)


def resolve(stage: int, conflicted: Sequence[str], milestones: Sequence[Milestone], worktree: str, failure: str) -> str:
    what = (
        "Merging this stage's branches produced conflicts in: " + ", ".join(conflicted)
        if conflicted
        else "The merged result fails validation:\n" + failure.strip()
    )
    parts = [
        f"You are integrating stage {stage} in {worktree}. {what}",
        "Resolve it so that the work of every milestone below is kept and the project works.",
        "Remove every conflict marker (<<<<<<<, =======, >>>>>>>). Do not commit; the runner does.",
        "",
    ]
    for m in milestones:
        parts += [f"--- Milestone {m.id}: {m.title} ---", m.text.strip(), ""]
    return "\n".join(parts)


def update(m: Milestone, worktree: str, base_branch: str, conflicted: Sequence[str], setting: str = "") -> str:
    """The milestone's own session, told the base moved under it (dependencies mode's merge queue)."""
    parts = [
        f"While you worked on milestone {m.id} ({m.title}), other milestones were merged into {base_branch}.",
        f"Your branch would conflict with {base_branch} in: {', '.join(conflicted)}.",
        f"The runner has started merging {base_branch} into your branch in {worktree}; those files hold",
        "conflict markers now. Resolve them so that both your milestone's work and what was merged",
        "are kept and the project works. Remove every conflict marker (<<<<<<<, =======, >>>>>>>).",
        "Do not commit and do not abort the merge; the runner commits it, then checks and reviews again.",
        *([setting] if setting else []),
        "",
        "The milestone file follows.",
        "",
        m.text.strip(),
        "",
    ]
    return "\n".join(parts)
