"""Flow expressions: Jinja2 in an immutable sandbox, JMESPath for selection, JSON types kept.

A string that is exactly one `{{ expr }}` evaluates to the expression's value (a dict stays a dict, a number a
number); any other string containing `{{`/`{%` renders to text. Attribute access prefers dict keys, so
`trigger.body.items` is the body's "items" key, never the dict method.

Evaluation is bounded before work is done, not after: sizes are checked before a value is built (one C call
that formats 100 MB cannot be interrupted), every evaluation has a time budget, and expressions see data and a
few functions that print as their names, never Python objects (docs/security.md, "Runtime isolation").
"""

from __future__ import annotations

import functools
import json
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import Any, cast

import jmespath
from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.runtime import Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, _PassArg

MAX_OUTPUT_CHARS = 256 * 1024
# Intermediate values may be larger than a result (a slice of a big trigger body), not without limit: every
# string, list or dict an expression builds is sized (as text) before it is built.
MAX_VALUE_CHARS = 1024 * 1024
# Loop iterations one evaluation may perform, all loops together (nested loops multiply quickly).
MAX_ITERATIONS = 100_000
# Items `range` may produce, and any other count an expression asks for (batch, slice, widths, padding).
MAX_RANGE = 10_000
MAX_EXPONENT = 256
# Integers beyond this many bits are refused before they are computed (multiplying huge integers is one long
# C call that nothing can interrupt); JSON tools lose precision past 53 bits anyway.
MAX_INT_BITS = 4096
# CPU seconds one evaluation may spend (the evaluating thread's CPU time: a tenant's step is not failed because
# the machine is busy with other work). Checked on every call, loop iteration, attribute and item access,
# operator, filter and test by a monotonic clock read (~60 ns); the thread's CPU clock (a system call) is read
# only once that much wall-clock time has passed, since CPU time never runs ahead of it. SIGALRM covers code
# that does not pass through those hooks where the evaluation runs on the main thread (a worker process). With
# the size checks this took a mix of flow templates from 52 to 75 us per evaluation (docs/security.md).
TIME_BUDGET_SECONDS = 2.0
# However starved of CPU an evaluation is, it ends after this many times its budget of wall-clock time.
WALL_CLOCK_FACTOR = 4.0
ALARM_GRACE_SECONDS = 0.5
_SINGLE = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)
# printf-style conversions: widths and precisions are checked before the text is allocated.
_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[a-zA-Z%]")


class ExpressionError(Exception):
    """An expression failed to parse or evaluate; the message names the problem, not Python internals."""


class ExpressionTimeout(ExpressionError):
    """An evaluation used up its time budget."""


class _Budget:
    """What one evaluation may still spend: CPU time, loop iterations; sizes already measured (by id, pinned).

    `deadline` is the earliest wall-clock time at which the CPU budget can be spent: the hooks compare only it,
    and past it `spent` reads the thread's CPU clock and moves it on by the CPU time still left."""

    __slots__ = ("cpu_started", "deadline", "hard_deadline", "iterations", "seconds", "sizes")

    def __init__(self, seconds: float) -> None:
        now = time.monotonic()
        self.seconds = seconds
        self.deadline = now + seconds
        self.hard_deadline = now + seconds * WALL_CLOCK_FACTOR
        self.cpu_started = time.thread_time()
        self.iterations = 0
        self.sizes: dict[int, tuple[Any, int]] = {}

    def spent(self) -> bool:
        """Called once the wall-clock deadline has passed: is the CPU budget (or the wall-clock cap) used up?"""
        now = time.monotonic()
        if now > self.hard_deadline:
            return True
        left = self.seconds - (time.thread_time() - self.cpu_started)
        if left <= 0:
            return True
        self.deadline = min(now + left, self.hard_deadline)
        return False


_budget: ContextVar[_Budget | None] = ContextVar("ihub_expression_budget", default=None)


def _timeout() -> ExpressionTimeout:
    return ExpressionTimeout(f"took longer than its time budget of {TIME_BUDGET_SECONDS:g} s")


def _tick() -> None:
    budget = _budget.get()
    if budget is not None and time.monotonic() > budget.deadline and budget.spent():
        raise _timeout()


def _on_alarm(signum: int, frame: Any) -> None:
    # Only raises inside an evaluation that is over its budget; a late alarm after it ended does nothing. An
    # evaluation that waited for the CPU rather than used it is given the rest of its budget: the alarm is set
    # again for then.
    budget = _budget.get()
    if budget is None or time.monotonic() <= budget.deadline:
        return
    if budget.spent():
        raise _timeout()
    signal.setitimer(signal.ITIMER_REAL, max(budget.deadline - time.monotonic(), 0.0) + ALARM_GRACE_SECONDS)


@contextmanager
def _budgeted() -> Iterator[None]:
    """One evaluation's budget; with a SIGALRM backstop when running on the main thread."""
    if _budget.get() is not None:  # a nested render shares the outer budget
        yield
        return
    token = _budget.set(_Budget(TIME_BUDGET_SECONDS))
    alarm = _alarm_available()
    if alarm:
        # After the deadline: the hooks normally stop the evaluation first, with a cleaner stack (an alarm landing
        # in a garbage-collector callback is ignored there, and the hooks catch the overrun next).
        signal.setitimer(signal.ITIMER_REAL, TIME_BUDGET_SECONDS + ALARM_GRACE_SECONDS)
    try:
        yield
    finally:
        try:
            if alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
        finally:
            # Reset even if the alarm raises right here: a budget left behind would fail every later evaluation.
            _budget.reset(token)


_alarm_installed = False


def _alarm_available() -> bool:
    """SIGALRM reaches only the main thread: installed there once (re-installing costs 10 us per evaluation)."""
    global _alarm_installed
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        return False
    if not _alarm_installed:
        if signal.getsignal(signal.SIGALRM) not in (signal.SIG_DFL, signal.SIG_IGN, None, _on_alarm):
            return False  # the embedding program uses SIGALRM itself: rely on the hooks alone
        signal.signal(signal.SIGALRM, _on_alarm)
        _alarm_installed = True
    return True


_CONTAINERS = (dict, list, tuple, Namespace)
_SCALARS = (str, int, float, bool, type(None))


def _text_size(value: Any, limit: int = MAX_VALUE_CHARS) -> int:
    """The length of a value's text form (about its JSON), refusing as soon as it passes `limit`.

    Shared sub-values are counted each time they appear (that is what printing them costs) but measured once.
    """
    if not isinstance(value, _CONTAINERS):
        return len(value) + 2 if isinstance(value, str) else 24
    budget = _budget.get()
    sizes = budget.sizes if budget is not None else {}

    def measure(item: Any) -> int:
        if isinstance(item, str):
            return len(item) + 2
        if item is None or isinstance(item, bool | float):
            return 24
        if isinstance(item, int):
            return item.bit_length() // 3 + 2
        if not isinstance(item, _CONTAINERS):
            return 24
        known = sizes.get(id(item))
        if known is not None and known[0] is item:
            return known[1]
        _tick()
        if isinstance(item, Namespace):
            return measure(_namespace_dict(item))
        total = 2
        pairs = item.items() if isinstance(item, dict) else ((None, v) for v in item)
        for key, child in pairs:
            total += (measure(key) if key is not None else 0) + measure(child) + 2
            if total > limit:
                raise SecurityError(f"value larger than {limit} characters")
        sizes[id(item)] = (item, total)
        return total

    size = measure(value)
    if size > limit:
        raise SecurityError(f"value larger than {limit} characters")
    return size


def _check_int(value: int) -> int:
    if value.bit_length() > MAX_INT_BITS:
        raise SecurityError(f"integer larger than {MAX_INT_BITS} bits")
    return value


def _check_count(name: str, count: Any) -> None:
    if isinstance(count, int) and not isinstance(count, bool) and abs(count) > MAX_RANGE:
        raise SecurityError(f"{name} {count} is larger than {MAX_RANGE}")


def _check_percent(template: str, args: Any) -> None:
    """`'%0100000000d' % 1` would allocate 100 MB: check widths, precisions and argument sizes first."""
    values = list(args.values()) if isinstance(args, dict) else list(args) if isinstance(args, tuple) else [args]
    total = len(template)
    for match in _PERCENT.finditer(template):
        for part in match.groups():
            if part == "*":
                width = next((v for v in values if isinstance(v, int)), 0)
                _check_count("width", width)
            elif part is not None:
                _check_count("width", int(part))
                total += int(part)
    total += sum(_text_size(v) for v in values)
    if total > MAX_VALUE_CHARS:
        raise SecurityError(f"formatted text larger than {MAX_VALUE_CHARS} characters")


class _Function:
    """A callable offered to expressions that prints as its name, never as a Python object with an address."""

    __slots__ = ("_name", "_function")

    def __init__(self, name: str, function: Callable[..., Any]) -> None:
        self._name = name
        self._function = function

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        _tick()
        return self._function(*args, **kwargs)

    def __repr__(self) -> str:
        return self._name

    def __str__(self) -> str:
        raise ExpressionError(f"{self._name} is a function, not a value: call it, e.g. {self._name}(...)")


# Undefined-attribute messages name the type: "function object", not this module's path.
_Function.__module__, _Function.__name__, _Function.__qualname__ = "builtins", "function", "function"


class _Namespace(Namespace):
    """`namespace()` prints its values, not `<Namespace ...>`."""

    def __repr__(self) -> str:
        return repr(_namespace_dict(self))


def _namespace_dict(value: Namespace) -> dict[str, Any]:
    return dict(object.__getattribute__(value, "_Namespace__attrs"))


def _range(*args: int) -> list[int]:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise SecurityError(f"range of {len(numbers)} numbers: at most {MAX_RANGE}")
    return list(numbers)


def _dict(*args: Any, **kwargs: Any) -> dict[str, Any]:
    value = dict(*args, **kwargs)
    _text_size(value)
    return value


def _materialize(value: Any) -> Any:
    """Lazy results (map, select, reverse ...) become lists, counted against the loop budget."""
    if isinstance(value, _SCALARS + _CONTAINERS):
        return value
    if isinstance(value, Iterator | range):
        items = []
        for item in _bounded_loop(value):
            items.append(item)
        return items
    return value


# Filters that turn their input (and some arguments) into text: sized before they run.
_TEXT_FILTERS = frozenset(
    {
        *("string", "lower", "upper", "title", "capitalize", "trim", "striptags", "escape", "e", "forceescape"),
        *("urlencode", "urlize", "xmlattr", "pprint", "wordwrap", "truncate", "safe", "join", "tojson", "json"),
        *("replace", "indent", "center", "format", "list", "wordcount"),
    }
)


def _guard_filter(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse a filter call whose result would be too large, from its arguments, before it runs."""
    if not args:
        return
    value, rest = args[0], args[1:]
    if name in _TEXT_FILTERS and isinstance(value, _CONTAINERS):
        _text_size(value)
    if name == "center":
        _check_count("width", rest[0] if rest else kwargs.get("width", 80))
    elif name == "indent":
        width = rest[0] if rest else kwargs.get("width", 4)
        lines = str(value).count("\n") + 1 if isinstance(value, str) else 1
        pad = width if isinstance(width, int) else len(str(width))
        _check_count("width", pad)
        if pad * lines > MAX_VALUE_CHARS:
            raise SecurityError(f"indented text larger than {MAX_VALUE_CHARS} characters")
    elif name == "format" and isinstance(value, str):
        _check_percent(value, kwargs or tuple(rest))
    elif name in ("batch", "slice"):
        _check_count("count", rest[0] if rest else kwargs.get("linecount", kwargs.get("slices", 0)))
    elif name == "replace" and isinstance(value, str) and len(rest) >= 2:
        old, new = str(rest[0]), str(rest[1])
        occurrences = len(value) + 1 if old == "" else value.count(old)
        if len(value) + occurrences * len(new) > MAX_VALUE_CHARS:
            raise SecurityError(f"replaced text larger than {MAX_VALUE_CHARS} characters")
    elif name == "join":
        separator = str(rest[0]) if rest else str(kwargs.get("d", ""))
        count = len(value) if isinstance(value, list | tuple | dict | str) else 0
        if len(separator) * count > MAX_VALUE_CHARS:
            raise SecurityError(f"joined text larger than {MAX_VALUE_CHARS} characters")
    elif name == "wordwrap":
        wrap = rest[2] if len(rest) > 2 else kwargs.get("wrapstring")
        if isinstance(wrap, str) and isinstance(value, str) and len(wrap) * len(value) > MAX_VALUE_CHARS:
            raise SecurityError(f"wrapped text larger than {MAX_VALUE_CHARS} characters")


def _guarded(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    pass_arg = _PassArg.from_obj(function)

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        _guard_filter(name, args[1:] if pass_arg is not None else args, kwargs)
        result = _materialize(function(*args, **kwargs))
        if isinstance(result, str) and len(result) > MAX_VALUE_CHARS:
            raise SecurityError(f"text larger than {MAX_VALUE_CHARS} characters")
        return result

    return guarded


def _concat(parts: tuple[Any, ...]) -> str:
    """The `~` operator: every part sized before it becomes text."""
    _tick()
    total = 0
    for part in parts:
        total += len(part) if isinstance(part, str) else _text_size(_data(part))
        if total > MAX_VALUE_CHARS:
            raise SecurityError(f"text larger than {MAX_VALUE_CHARS} characters")
    return "".join(part if isinstance(part, str) else str(_data(part)) for part in parts)


class _CodeGenerator(CodeGenerator):
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.ihub_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _KeyFirstEnvironment(ImmutableSandboxedEnvironment):
    """Dicts are data: `x.name` looks up the key before any attribute (`x.items`, `x.keys`, `x.values`).

    Operators that can build large values (`*`, `**`, `%`, `+`) are checked before they run, so `'x' * 10**10`,
    `9 ** 9 ** 9` or `'%0100000000d' % 1` cannot exhaust memory or CPU.
    """

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _CodeGenerator

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ihub_concat = _concat

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _tick()
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                if isinstance(sequence, str | list | tuple) and isinstance(count, int) and count > 0:
                    size = len(sequence) if isinstance(sequence, str) else _text_size(sequence)
                    if size * count > MAX_VALUE_CHARS:
                        raise SecurityError("repetition result too large")
            if _is_int(left) and _is_int(right) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise SecurityError(f"integer larger than {MAX_INT_BITS} bits")
        if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponent larger than {MAX_EXPONENT}")
        if operator == "**" and _is_int(left) and _is_int(right) and left.bit_length() * right > MAX_INT_BITS:
            raise SecurityError(f"integer larger than {MAX_INT_BITS} bits")
        if operator == "%" and isinstance(left, str):
            _check_percent(left, right)
        if operator == "+":
            if isinstance(left, str) and isinstance(right, str):
                if len(left) + len(right) > MAX_VALUE_CHARS:
                    raise SecurityError(f"text larger than {MAX_VALUE_CHARS} characters")
            elif (
                isinstance(left, list | tuple)
                and isinstance(right, list | tuple)
                and _text_size(left) + _text_size(right) > MAX_VALUE_CHARS
            ):
                raise SecurityError(f"list larger than {MAX_VALUE_CHARS} characters")
        result = super().call_binop(context, operator, left, right)
        return _check_int(result) if _is_int(result) else result

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _tick()
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
        if isinstance(obj, dict):
            if attribute in obj:
                return obj[attribute]
            return self.undefined(obj=obj, name=attribute)
        if isinstance(obj, list | str | int | float | bool | _Function) or obj is None:
            # Plain JSON values expose no methods to flow authors.
            return self.undefined(obj=obj, name=attribute)
        value = super().getattr(obj, attribute)
        if callable(value) and not isinstance(value, Macro | _Function | Undefined):
            # `loop.cycle`, `(1, 2).index`: usable, but never printed as a bound method at an address.
            return _Function(attribute, value)
        return value

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        if isinstance(obj, dict):
            if argument in obj:
                return obj[argument]
            return self.undefined(obj=obj, name=argument)
        if isinstance(obj, list | str) and isinstance(argument, int | slice):
            try:
                return obj[argument]
            except IndexError:
                # Jinja annotates `name` as str, yet its own getitem passes indexes too and Undefined words
                # them "has no element 5"; a str here would change the message to "has no attribute '5'".
                return self.undefined(obj=obj, name=argument)  # type: ignore[arg-type]
        return super().getitem(obj, argument)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _jmespath(value: Any, expression: str) -> Any:
    try:
        return jmespath.search(expression, value)
    except jmespath.exceptions.JMESPathError as error:
        raise ExpressionError(f"jmespath {expression!r}: {error}") from None


def _bounded_loop(iterable: Any) -> Any:
    """Wraps the iterable of every `{% for %}`: counts iterations against the evaluation's budget."""
    budget = _budget.get()
    for item in iterable:
        if budget is not None:
            budget.iterations += 1
            if budget.iterations > MAX_ITERATIONS:
                raise ExpressionError(f"more than {MAX_ITERATIONS} loop iterations")
            if time.monotonic() > budget.deadline and budget.spent():
                raise _timeout()
        yield item


def _tojson(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _fromjson(value: str) -> Any:
    try:
        return json.loads(value)
    except (TypeError, ValueError) as error:
        raise ExpressionError(f"fromjson: {error}") from None


@lru_cache(maxsize=1)
def environment() -> _KeyFirstEnvironment:
    env = _KeyFirstEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True, finalize=_finalize
    )
    env.filters["jmespath"] = _jmespath
    env.filters["json"] = _tojson
    env.filters["tojson"] = _tojson
    env.filters["fromjson"] = _fromjson
    for name, function in list(env.filters.items()):
        env.filters[name] = _guarded(name, function)
    for name, test in list(env.tests.items()):
        # Jinja's tests table is an unannotated dict literal: mypy types its values as builtins.function,
        # which it does not see as callable. They are Jinja's test functions.
        env.tests[name] = _guarded(name, cast("Callable[..., Any]", test))
    env.filters["_ihub_bounded_loop"] = _bounded_loop
    # Only data-building functions: lipsum (megabytes of filler text on request), cycler and joiner (objects
    # that print as Python internals) are gone; what stays prints as its name and checks its sizes.
    env.globals.clear()
    env.globals["range"] = _Function("range", _range)
    env.globals["dict"] = _Function("dict", _dict)
    env.globals["namespace"] = _Function("namespace", _Namespace)
    env.globals["jmespath"] = _Function("jmespath", lambda expression, value: _jmespath(value, expression))
    return env


def is_template(value: str) -> bool:
    return "{{" in value or "{%" in value


@lru_cache(maxsize=4096)
def _compile_single(expr: str) -> Any:
    return environment().compile_expression(expr, undefined_to_none=False)


@lru_cache(maxsize=4096)
def _compile_text(source: str) -> Any:
    env = environment()
    tree = env.parse(source)
    for loop in tree.find_all(nodes.For):
        loop.iter = nodes.Filter(loop.iter, "_ihub_bounded_loop", [], [], None, None, lineno=loop.lineno)
    return env.from_string(tree)


def check_syntax(source: str) -> None:
    """Raise ExpressionError if a string's template does not parse."""
    if not is_template(source):
        return
    try:
        match = _SINGLE.match(source)
        if match and "}}" not in match.group("expr") and "{{" not in match.group("expr"):
            _compile_single(match.group("expr").strip())
        else:
            _compile_text(source)
    except TemplateSyntaxError as error:
        raise ExpressionError(f"syntax error: {error.message}") from None


def check_expression(expr: str) -> None:
    """Check a bare expression (an `if` condition or `foreach` items without braces)."""
    try:
        _compile_single(_strip_braces(expr))
    except TemplateSyntaxError as error:
        raise ExpressionError(f"syntax error: {error.message}") from None


def _strip_braces(expr: str) -> str:
    match = _SINGLE.match(expr)
    if match and "}}" not in match.group("expr"):
        return match.group("expr").strip()
    return expr


def _data(value: Any) -> Any:
    """An expression's value as JSON data: lazy sequences become lists; functions and objects are refused."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(_data(k)): _data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_data(item) for item in value]
    if isinstance(value, Namespace):
        return _data(_namespace_dict(value))
    if isinstance(value, Iterator | range):
        return _data(_materialize(value))
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined raises, naming what is missing
    if isinstance(value, _Function | Macro) or callable(value):
        raise ExpressionError("a function is not a value: call it")
    raise ExpressionError("the value is not data (text, number, boolean, list or object)")


def _finalize(value: Any) -> Any:
    """Every `{{ }}` output: sized before it becomes text, never a Python object's repr."""
    if isinstance(value, _SCALARS):
        return value
    value = _data(value)
    _text_size(value, MAX_OUTPUT_CHARS)
    return value


def _bounded(value: Any) -> Any:
    if isinstance(value, str):
        if len(value) > MAX_OUTPUT_CHARS:
            raise ExpressionError(f"result larger than {MAX_OUTPUT_CHARS} characters")
        return value
    value = _data(value)
    if isinstance(value, dict | list):
        try:
            _text_size(value, MAX_OUTPUT_CHARS)
        except SecurityError:
            raise ExpressionError(f"result larger than {MAX_OUTPUT_CHARS} characters") from None
    return value


def evaluate(expr: str, context: dict[str, Any]) -> Any:
    """Evaluate a bare expression (`trigger.body.x > 3`); braces around it are accepted."""
    try:
        compiled = _compile_single(_strip_braces(expr))
        with _budgeted():
            return _bounded(compiled(**context))
    except ExpressionError:
        raise
    except TemplateSyntaxError as error:
        raise ExpressionError(f"syntax error: {error.message}") from None
    except UndefinedError as error:
        raise ExpressionError(f"undefined: {error.message}") from None
    except SecurityError as error:
        raise ExpressionError(f"not allowed: {error}") from None
    except Exception as error:  # noqa: BLE001 - any failure inside a template is the author's, reported as text
        raise ExpressionError(f"{type(error).__name__}: {error}") from None


def _render_bounded(template: Any, context: dict[str, Any]) -> str:
    """Render chunk by chunk, stopping as soon as the text passes the size cap."""
    parts: list[str] = []
    size = 0
    for chunk in template.generate(**context):
        size += len(chunk)
        if size > MAX_OUTPUT_CHARS:
            raise ExpressionError(f"result larger than {MAX_OUTPUT_CHARS} characters")
        parts.append(chunk)
    return "".join(parts)


def render(value: Any, context: dict[str, Any]) -> Any:
    """Render a JSON value: every string template inside it is evaluated, structure and types are kept."""
    if isinstance(value, str):
        if not is_template(value):
            return value
        match = _SINGLE.match(value)
        if match and "}}" not in match.group("expr") and "{{" not in match.group("expr"):
            return evaluate(match.group("expr"), context)
        try:
            with _budgeted():
                text = _render_bounded(_compile_text(value), context)
        except TemplateSyntaxError as error:
            raise ExpressionError(f"syntax error: {error.message}") from None
        except UndefinedError as error:
            raise ExpressionError(f"undefined: {error.message}") from None
        except SecurityError as error:
            raise ExpressionError(f"not allowed: {error}") from None
        except ExpressionError:
            raise
        except Exception as error:  # noqa: BLE001
            raise ExpressionError(f"{type(error).__name__}: {error}") from None
        return _bounded(text)
    if isinstance(value, dict):
        with _budgeted():  # one budget for all the templates of a step's value
            return {str(render(k, context)): render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        with _budgeted():
            return [render(item, context) for item in value]
    return value


def referenced_names(source: str) -> set[str]:
    """Top-level names an expression reads (for diagnostics)."""
    try:
        tree = environment().parse(source)
    except TemplateSyntaxError:
        return set()
    return {node.name for node in tree.find_all(nodes.Name)}
