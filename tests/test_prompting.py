"""Prompt rendering through chat templates and splitting thinking from the answer."""

from __future__ import annotations

import pytest

from vase.prompting import (
    CHOICE_INSTRUCTION,
    PAPER_INSTRUCTION,
    build_messages,
    prompt_opens_thinking,
    render_prompt,
    split_thinking,
    supports_thinking_switch,
)
from vase.tasks import Problem

QWEN3_LIKE = (
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n"
    "{%- if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{%- endif %}"
    "{%- endif %}"
)
PLAIN = (
    "{%- for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
    "{%- if add_generation_prompt %}[assistant] {% endif %}"
)
NO_SYSTEM = (
    "{%- for m in messages %}{%- if m.role == 'system' %}{{ raise_exception('System role not supported') }}"
    "{%- endif %}<{{ m.role }}>{{ m.content }}\n{% endfor %}{%- if add_generation_prompt %}<assistant>{% endif %}"
)
R1_LIKE = (
    "{%- for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
    "{%- if add_generation_prompt %}<assistant><think>\n{% endif %}"
)


def make_tokenizer(template: str | None):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]")), unk_token="[UNK]"
    )
    tok.chat_template = template
    return tok


MATH = Problem(id="m1", prompt="What is $1+1$?", answer="2")
CHOICE = Problem(id="c1", prompt="Which is a prime?", answer="B", kind="choice", choices=["4", "5", "6", "8"])


def test_build_messages_math_and_choice():
    msgs = build_messages(MATH)
    assert msgs == [{"role": "system", "content": PAPER_INSTRUCTION},
                    {"role": "user", "content": "What is $1+1$?"}]
    assert "\\boxed{}" in PAPER_INSTRUCTION and "step by step" in PAPER_INSTRUCTION
    cm = build_messages(CHOICE)
    assert cm[0]["content"] == CHOICE_INSTRUCTION
    user = cm[1]["content"]
    for line in ("(A) 4", "(B) 5", "(C) 6", "(D) 8"):
        assert line in user
    assert "\\boxed{}" in user and "letter" in user
    assert build_messages(MATH, system_prompt=None) == [{"role": "user", "content": "What is $1+1$?"}]
    assert build_messages(MATH, system_prompt="Be brief.")[0]["content"] == "Be brief."


def test_qwen3_template_gets_thinking_mode():
    tok = make_tokenizer(QWEN3_LIKE)
    assert supports_thinking_switch(tok)
    on = render_prompt(tok, MATH)
    assert PAPER_INSTRUCTION in on and "What is $1+1$?" in on
    assert on.rstrip().endswith("assistant") and "</think>" not in on  # thinking mode: nothing pre-filled
    off = render_prompt(tok, MATH, thinking=False)
    assert "<think>\n\n</think>" in off
    assert render_prompt(tok, MATH, thinking=True) == on


def test_kwargs_passed_only_to_thinking_templates():
    calls = []

    class Fake:
        chat_template = "{{ messages }}"

        def apply_chat_template(self, messages, **kwargs):
            calls.append(kwargs)
            return "rendered"

    assert render_prompt(Fake(), MATH) == "rendered"
    assert "enable_thinking" not in calls[-1] and calls[-1]["tokenize"] is False
    assert calls[-1]["add_generation_prompt"] is True
    Fake.chat_template = "{% if enable_thinking %}{% endif %}"
    render_prompt(Fake(), MATH)
    assert calls[-1]["enable_thinking"] is True


def test_plain_and_system_less_templates():
    out = render_prompt(make_tokenizer(PLAIN), CHOICE)
    assert out.startswith("[system] " + CHOICE_INSTRUCTION) and "(D) 8" in out
    merged = render_prompt(make_tokenizer(NO_SYSTEM), MATH)
    assert "<system>" not in merged and merged.startswith("<user>" + PAPER_INSTRUCTION)
    bare = render_prompt(make_tokenizer(None), MATH)
    assert "System: " + PAPER_INSTRUCTION in bare and bare.endswith("Assistant:")


def test_prompt_opens_thinking():
    prompt = render_prompt(make_tokenizer(R1_LIKE), MATH)
    assert prompt_opens_thinking(prompt)
    assert not prompt_opens_thinking(render_prompt(make_tokenizer(QWEN3_LIKE), MATH, thinking=False))
    assert not prompt_opens_thinking("no tags")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>let me see</think>The answer is \\boxed{2}.", ("let me see", "The answer is \\boxed{2}.", True)),
        ("<think>\nstep\n</think>\n\nfinal", ("step", "final", True)),
        ("no thinking here \\boxed{2}", (None, "no thinking here \\boxed{2}", True)),
        ("<think>ran out of tokens while thinking \\boxed{2}", ("ran out of tokens while thinking \\boxed{2}", "", False)),
        ("reasoning from a prefilled tag</think>answer", ("reasoning from a prefilled tag", "answer", True)),
        ("<think>a</think>mid<think>b</think>end", ("a</think>mid<think>b", "end", True)),
        ("<think>a</think>answer <think>again, never closed", ("again, never closed", "", False)),
        ("", (None, "", True)),
        (None, (None, "", True)),
    ],
)
def test_split_thinking(text, expected):
    assert split_thinking(text) == expected


def test_split_thinking_opened_in_prompt():
    assert split_thinking("still thinking", opened_in_prompt=True) == ("still thinking", "", False)
    assert split_thinking("done</think>\\boxed{1}", opened_in_prompt=True) == ("done", "\\boxed{1}", True)
