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


# -- runtime isolation: allocations refused before they happen, a time budget, no Python internals ------------

HOSTILE_ALLOCATIONS = [
    "{{ '%0100000000d' % 1 }}",
    "{{ '%.100000000f' % 1.5 }}",
    "{{ '%*d' % (100000000, 1) }}",
    "{{ '%0100000000d' | format(1) }}",
    "{{ 'x' | center(100000000) }}",
    "{{ 'a\nb' | indent(100000000) }}",
    "{{ 'x' * 10**9 }}",
    "{{ [0] * 10**8 }}",
    "{{ range(30000) | list }}",
    "{{ [1] | batch(100000000, 0) | list }}",
    "{{ [1] | slice(100000000) | list }}",
    "{{ 'ab' | replace('', 'x' * 500000) }}",
    "{{ [1, 2, 3] | join('x' * 1000000) }}",
    # Shared references: a small list whose text form would be 40 GB.
    "{% set s = 'x' * 200000 %}{{ [s] * 200000 }}",
    "{% set s = 'x' * 200000 %}{{ ([s] * 4000) ~ '' }}",
    "{% set s = 'x' * 200000 %}{{ ([s] * 4000) | string | length }}",
    "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ 1 }}",
    # Squaring a huge integer is one long C call that no time budget can interrupt.
    "{% set ns = namespace(x=10) %}{% for i in range(30) %}{% set ns.x = ns.x * ns.x %}{% endfor %}{{ 1 }}",
    "{{ (2 ** 200) ** 200 }}",
]


@pytest.mark.parametrize("source", HOSTILE_ALLOCATIONS)
def test_large_allocations_are_refused_before_they_happen(source: str) -> None:
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(ExpressionError):
            render(source, CTX)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, f"{peak / 1e6:.0f} MB allocated before the refusal"


def _render_in_thread(source: str, timeout: float = 30) -> Exception | object:
    """Render off the main thread (no SIGALRM there): only the evaluation hooks can stop it."""
    import threading

    outcome: list[object] = []

    def work() -> None:
        try:
            outcome.append(render(source, CTX))
        except Exception as error:  # noqa: BLE001 - the test inspects it
            outcome.append(error)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout)
    assert outcome, f"still evaluating after {timeout} s: no time budget"
    return outcome[0]


@pytest.mark.parametrize(
    "source",
    [
        # 2^40 calls of a self-recursive macro.
        "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
        # Membership tests against a long list, through `select` (no template loop to count).
        "{% set l = range(10000) | list %}"
        "{% for i in range(100) %}{{ range(10000) | select('in', l) | list | length }}{% endfor %}",
    ],
)
def test_evaluations_stop_at_their_time_budget(source: str) -> None:
    from ihub.flows.expressions import TIME_BUDGET_SECONDS

    outcome = _render_in_thread(source)
    assert isinstance(outcome, ExpressionError), outcome
    assert f"time budget of {TIME_BUDGET_SECONDS:g} s" in str(outcome)


def test_sigalrm_stops_code_the_hooks_do_not_see() -> None:
    """On a worker's main thread the alarm interrupts even a loop that never calls back into the sandbox."""
    from ihub.flows import expressions

    with pytest.raises(expressions.ExpressionTimeout), expressions._budgeted():
        while True:
            pass
    # The alarm is off afterwards: nothing fires later.
    import signal

    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_time_spent_waiting_for_the_cpu_does_not_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """The budget is the evaluating thread's CPU time: a step is not failed because the machine is busy."""
    import time

    from ihub.flows import expressions

    monkeypatch.setattr(expressions, "TIME_BUDGET_SECONDS", 0.2)
    monkeypatch.setattr(expressions, "ALARM_GRACE_SECONDS", 0.05)
    with expressions._budgeted():
        # Twice the budget of wall-clock time with no CPU used (as if other processes had the cores); the
        # alarm fires meanwhile, finds the CPU budget unspent and is set again.
        time.sleep(0.4)
        expressions._tick()
        with pytest.raises(expressions.ExpressionTimeout):
            while True:  # now spend it
                expressions._tick()
    import signal

    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_starved_evaluation_still_ends_at_its_wall_clock_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from ihub.flows import expressions

    monkeypatch.setattr(expressions, "TIME_BUDGET_SECONDS", 0.05)
    monkeypatch.setattr(expressions, "WALL_CLOCK_FACTOR", 3.0)
    monkeypatch.setattr(expressions, "ALARM_GRACE_SECONDS", 5.0)
    with pytest.raises(expressions.ExpressionTimeout), expressions._budgeted():
        time.sleep(0.2)  # past 3 x 0.05 s without using CPU
        expressions._tick()


INTERNALS = ("0x", "object at", "<function", "<class", "<built-in", "<generator", "<bound", "Namespace", "ihub.")


@pytest.mark.parametrize(
    "source",
    [
        "{{ lipsum }}",
        "{{ lipsum() }}",
        "{{ cycler }}",
        "{{ cycler(1, 2) }}",
        "{{ joiner() }}",
        "{{ range }}",
        "{{ dict }}",
        "{{ namespace }}",
        "{{ jmespath }}",
        "x{{ range }}",
        "{{ range | string }}",
        "{{ dict ~ '' }}",
        "{{ '%s' % dict }}",
        "{{ [dict] | join(',') }}",
        "{{ (1, 2).index }}",
        "{{ dict.fromkeys }}",
        "{{ range.x }}",
        "{% for i in [1] %}{{ loop.cycle }}{% endfor %}",
        "{% set ns = namespace(a=1) %}{{ ns }}",
        "{{ [1, 2] | map('string') }}",
        "{{ [1, 2] | map('string') | string }}",
        "{{ [1, 2] | reverse }}",
        "x{{ [1, 2] | select('odd') }}",
        "{{ self }}",
    ],
)
def test_expressions_never_print_python_internals(source: str) -> None:
    try:
        text = str(render(source, CTX))
    except ExpressionError as error:
        text = str(error)
    assert not [marker for marker in INTERNALS if marker in text], text


def test_what_replaced_the_internals_still_works() -> None:
    assert render("{{ dict(a=1, b=[2]) }}", CTX) == {"a": 1, "b": [2]}
    summed = "{% set ns = namespace(n=0) %}{% for i in [1, 2] %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}"
    assert render(summed, CTX) == "3"
    assert render("{% set ns = namespace(n=1) %}{{ ns }}", CTX) == "{'n': 1}"
    assert render("{% for i in [1, 2, 3] %}{{ loop.cycle('a', 'b') }}{% endfor %}", CTX) == "aba"
    assert render("{{ [1, 2] | map('string') }}", CTX) == ["1", "2"]
    assert render("{{ [1, 2, 3] | reverse }}", CTX) == [3, 2, 1]
    assert render("{{ range(3) }}", CTX) == [0, 1, 2]
    assert render("{{ '%s-%05d' % ('a', 3) }}", CTX) == "a-00003"
    assert render("{{ 'ab' | center(6) }}", CTX) == "  ab  "
    assert render("{{ 2 ** 64 }}", CTX) == 2**64
    assert render("{{ 'a' ~ 1 ~ [2] }}", CTX) == "a1[2]"
    with pytest.raises(ExpressionError, match="range is a function, not a value"):
        render("{{ range | string }}", CTX)
