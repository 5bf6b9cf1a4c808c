"""Expressions: Jinja2 sandbox with JSON types kept, key-first attribute access, JMESPath, no Python."""

from __future__ import annotations

import pytest

from ihub.flows.expressions import MAX_OUTPUT_CHARS, ExpressionError, evaluate, render

CTX = {"trigger": {"body": {"items": [1, 2, 3], "keys": "k", "user": {"name": "Ada"}, "n": 4}}, "vars": {}}


def test_single_expression_keeps_json_types() -> None:
    assert render("{{ trigger.body.n }}", CTX) == 4
    assert render("{{ trigger.body.user }}", CTX) == {"name": "Ada"}
    assert render("{{ trigger.body.n > 3 }}", CTX) is True
    assert render("n={{ trigger.body.n }}", CTX) == "n=4"
    assert render({"a": ["{{ trigger.body.items }}", 5, None]}, CTX) == {"a": [[1, 2, 3], 5, None]}


def test_attribute_access_prefers_keys() -> None:
    assert render("{{ trigger.body.items }}", CTX) == [1, 2, 3]
    assert render("{{ trigger.body.keys }}", CTX) == "k"
    with pytest.raises(ExpressionError):
        render("{{ trigger.body.values() }}", CTX)


def test_jmespath_filter_and_function() -> None:
    assert render("{{ trigger.body | jmespath('user.name') }}", CTX) == "Ada"
    assert render("{{ jmespath('items[?@ > `1`]', trigger.body) }}", CTX) == [2, 3]
    with pytest.raises(ExpressionError, match="jmespath"):
        render("{{ trigger.body | jmespath('[[') }}", CTX)


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ trigger.__class__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ trigger.body.items.append(4) }}",
        "{{ range(10**7) | list }}",
        "{{ 'x' * 10000000 }}",
    ],
)
def test_no_python_and_bounded(source: str) -> None:
    with pytest.raises(ExpressionError):
        render(source, CTX)
    assert CTX["trigger"]["body"]["items"] == [1, 2, 3]


def test_undefined_is_an_error_with_the_name() -> None:
    with pytest.raises(ExpressionError, match="nope"):
        evaluate("trigger.body.nope.x", CTX)
    assert render("{{ trigger.body.nope | default('d') }}", CTX) == "d"
    assert MAX_OUTPUT_CHARS >= 1024


@pytest.mark.parametrize(
    "source",
    [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% for i in range(1000) %}{% for j in range(1000) %}x{% endfor %}{% endfor %}",
        "{{ 'x' * 10000000000 }}",
        "{{ [1] * 10000000000 }}",
        "{{ 9 ** 99999999 }}",
        "a{{ 'x' * 200000 }}{{ 'y' * 200000 }}",
    ],
)
def test_time_and_memory_are_bounded(source: str) -> None:
    import time

    started = time.monotonic()
    with pytest.raises(ExpressionError):
        render(source, CTX)
    assert time.monotonic() - started < 2


def test_loops_within_budget_work() -> None:
    assert render("{% for i in trigger.body.items %}{{ i }},{% endfor %}", CTX) == "1,2,3,"
    assert render("{{ 2 ** 10 }}", CTX) == 1024
    assert render("{{ 'ab' * 3 }}", CTX) == "ababab"
