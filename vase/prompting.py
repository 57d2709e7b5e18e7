"""Chat prompts in the paper's format, and splitting a model's output into thinking and answer.

The paper samples Qwen3 in thinking mode with a system prompt asking for step-by-step
reasoning and a final answer in ``\\boxed{}``. :func:`render_prompt` applies the tokenizer's own
chat template; Qwen3-style templates (those that read ``enable_thinking``) get
``enable_thinking=True`` unless ``thinking=False`` is asked for.
"""

from __future__ import annotations

from typing import Any

from vase.tasks.base import Problem

PAPER_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CHOICE_INSTRUCTION = (
    "Please reason step by step, and put the letter of your final answer choice "
    "(A, B, C or D) within \\boxed{}, e.g. \\boxed{A}."
)
CODE_INSTRUCTION = (
    "Please reason step by step, then give your complete solution as one Python program "
    "in a single ```python code block at the end of your answer."
)

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

__all__ = [
    "CHOICE_INSTRUCTION",
    "CODE_INSTRUCTION",
    "PAPER_INSTRUCTION",
    "build_messages",
    "format_question",
    "instruction_for",
    "prompt_opens_thinking",
    "render_prompt",
    "split_thinking",
    "supports_thinking_switch",
]


def instruction_for(problem: Problem) -> str:
    """The default system instruction for the problem's kind."""
    if problem.kind == "choice":
        return CHOICE_INSTRUCTION
    if problem.kind == "code":
        return CODE_INSTRUCTION
    return PAPER_INSTRUCTION


def format_question(problem: Problem) -> str:
    """The user-turn text: the question, plus the lettered choices for choice problems."""
    text = problem.prompt.strip()
    if problem.kind == "choice" and problem.choices:
        if len(problem.choices) > len(LETTERS):
            raise ValueError("too many choices")
        lines = [f"({LETTERS[i]}) {c}" for i, c in enumerate(problem.choices)]
        letters = ", ".join(LETTERS[: len(problem.choices)])
        text += "\n\n" + "\n".join(lines)
        text += f"\n\nAnswer with the letter of the correct choice ({letters}) in \\boxed{{}}."
    return text


def build_messages(problem: Problem, system_prompt: str | None = PAPER_INSTRUCTION) -> list[dict[str, str]]:
    """``[{"role": "system", ...}, {"role": "user", ...}]`` for ``problem``.

    With the default ``system_prompt`` (the paper's instruction) a choice or code problem
    gets the matching instruction for its kind; pass any other string to override, or
    ``None``/``""`` to send no system message.
    """
    if system_prompt == PAPER_INSTRUCTION:
        system_prompt = instruction_for(problem)
    messages: list[dict[str, str]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": format_question(problem)})
    return messages


def supports_thinking_switch(tokenizer: Any) -> bool:
    """True for chat templates that read ``enable_thinking`` (Qwen3 and alikes)."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # named templates
        template = " ".join(str(t) for t in template.values())
    return isinstance(template, str) and "enable_thinking" in template


def _plain_render(messages: list[dict[str, str]]) -> str:
    parts = []
    for m in messages:
        parts.append(f"{m['role'].capitalize()}: {m['content']}")
    parts.append("Assistant:")
    return "\n\n".join(parts)


def render_prompt(
    tokenizer: Any,
    problem: Problem,
    *,
    thinking: bool | None = None,
    system_prompt: str | None = PAPER_INSTRUCTION,
) -> str:
    """The prompt string for ``problem`` through the tokenizer's chat template.

    ``thinking``: None = the paper's setting (thinking mode on for templates that have the
    switch, nothing passed otherwise); True/False force ``enable_thinking`` on templates that
    support it (ignored elsewhere). A template that rejects the system role gets the
    instruction prepended to the user turn. A tokenizer without a chat template gets a plain
    "System:/User:/Assistant:" rendering.
    """
    messages = build_messages(problem, system_prompt)
    if getattr(tokenizer, "chat_template", None) is None or not hasattr(tokenizer, "apply_chat_template"):
        return _plain_render(messages)
    kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": True}
    if supports_thinking_switch(tokenizer):
        kwargs["enable_thinking"] = True if thinking is None else bool(thinking)
    try:
        out = tokenizer.apply_chat_template(messages, **kwargs)
    except Exception:
        if messages[0]["role"] != "system":
            raise
        merged = [{"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}]
        out = tokenizer.apply_chat_template(merged, **kwargs)
    if not isinstance(out, str):  # some versions return a BatchEncoding/list when misconfigured
        raise TypeError(f"apply_chat_template returned {type(out).__name__}, expected str")
    return out


def prompt_opens_thinking(prompt: str) -> bool:
    """True when the rendered prompt itself ends inside an open ``<think>`` block (templates
    such as DeepSeek-R1's put ``<think>\\n`` in the generation prompt, so the output only
    carries the closing tag)."""
    last_open = prompt.rfind(THINK_OPEN)
    return last_open != -1 and prompt.find(THINK_CLOSE, last_open) == -1


def split_thinking(text: str | None, *, opened_in_prompt: bool = False) -> tuple[str | None, str, bool]:
    """Split a completion into ``(thinking, answer_text, closed)``.

    - ``<think>...</think>rest`` -> (inner thinking, rest, True)
    - no tags at all -> (None, text, True) (a model without thinking), unless
      ``opened_in_prompt`` (the prompt ended with ``<think>``), then the whole text is an
      unclosed thinking block -> (text, "", False)
    - ``<think>`` opened and never closed -> (everything after it, "", False): the sample ran
      out of tokens while thinking and must be graded wrong
    - only ``</think>`` (the opening tag was in the prompt) -> (text before it, rest, True)

    The answer is what follows the *last* ``</think>``.
    """
    if text is None:
        text = ""
    open_idx = text.find(THINK_OPEN)
    close_idx = text.rfind(THINK_CLOSE)
    if close_idx != -1 and (open_idx == -1 or open_idx < close_idx):
        # A later re-opened <think> after the last close would mean an unclosed block.
        reopen = text.find(THINK_OPEN, close_idx + len(THINK_CLOSE))
        if reopen != -1:
            start = reopen + len(THINK_OPEN)
            return text[start:].strip(), "", False
        start = open_idx + len(THINK_OPEN) if open_idx != -1 else 0
        thinking = text[start:close_idx].strip()
        answer = text[close_idx + len(THINK_CLOSE):].strip()
        return thinking, answer, True
    if open_idx != -1:
        return text[open_idx + len(THINK_OPEN):].strip(), "", False
    if opened_in_prompt:
        return text.strip(), "", False
    return None, text.strip(), True
