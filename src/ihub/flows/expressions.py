"""Flow expressions: Jinja2 in an immutable sandbox, JMESPath for selection, JSON types kept.

A string that is exactly one `{{ expr }}` evaluates to the expression's value (a dict stays a dict, a number a
number); any other string containing `{{`/`{%` renders to text. Attribute access prefers dict keys, so
`trigger.body.items` is the body's "items" key, never the dict method. Evaluation is bounded: rendered text and
structured values have a size cap, ranges are capped by the sandbox, and no Python callables are reachable.
"""

from __future__ import annotations

import json
import re
from contextvars import ContextVar
from functools import lru_cache
from typing import Any

import jmespath
from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_OUTPUT_CHARS = 256 * 1024
# Loop iterations one evaluation may perform, all loops together (nested loops multiply quickly).
MAX_ITERATIONS = 100_000
MAX_EXPONENT = 256
_iterations: ContextVar[list[int] | None] = ContextVar("ihub_expression_iterations", default=None)
_SINGLE = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)


class ExpressionError(Exception):
    """An expression failed to parse or evaluate; the message names the problem, not Python internals."""


class _KeyFirstEnvironment(ImmutableSandboxedEnvironment):
    """Dicts are data: `x.name` looks up the key before any attribute (`x.items`, `x.keys`, `x.values`).

    `*` and `**` are checked before they run, so `'x' * 10**10` or `9 ** 9 ** 9` cannot exhaust memory or CPU.
    """

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                repeats = isinstance(sequence, str | list | tuple) and isinstance(count, int)
                if repeats and len(sequence) * count > MAX_OUTPUT_CHARS:
                    raise SecurityError("repetition result too large")
        if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponent larger than {MAX_EXPONENT}")
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, dict):
            if attribute in obj:
                return obj[attribute]
            return self.undefined(obj=obj, name=attribute)
        if isinstance(obj, list | str | int | float | bool) or obj is None:
            # Plain JSON values expose no methods to flow authors.
            return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, dict):
            if argument in obj:
                return obj[argument]
            return self.undefined(obj=obj, name=argument)
        if isinstance(obj, list | str) and isinstance(argument, int | slice):
            try:
                return obj[argument]
            except IndexError:
                return self.undefined(obj=obj, name=argument)
        return super().getitem(obj, argument)


def _jmespath(value: Any, expression: str) -> Any:
    try:
        return jmespath.search(expression, value)
    except jmespath.exceptions.JMESPathError as error:
        raise ExpressionError(f"jmespath {expression!r}: {error}") from None


def _bounded_loop(iterable: Any) -> Any:
    """Wraps the iterable of every `{% for %}`: counts iterations against the evaluation's budget."""
    counter = _iterations.get()
    for item in iterable:
        if counter is not None:
            counter[0] += 1
            if counter[0] > MAX_ITERATIONS:
                raise ExpressionError(f"more than {MAX_ITERATIONS} loop iterations")
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
    env = _KeyFirstEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
    env.filters["jmespath"] = _jmespath
    env.filters["json"] = _tojson
    env.filters["tojson"] = _tojson
    env.filters["fromjson"] = _fromjson
    env.filters["_ihub_bounded_loop"] = _bounded_loop
    env.globals["jmespath"] = lambda expression, value: _jmespath(value, expression)
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


def _bounded(value: Any) -> Any:
    if isinstance(value, str):
        if len(value) > MAX_OUTPUT_CHARS:
            raise ExpressionError(f"result larger than {MAX_OUTPUT_CHARS} characters")
        return value
    if isinstance(value, dict | list):
        try:
            size = len(json.dumps(value, default=str))
        except (TypeError, ValueError) as error:
            raise ExpressionError(f"result is not JSON: {error}") from None
        if size > MAX_OUTPUT_CHARS:
            raise ExpressionError(f"result larger than {MAX_OUTPUT_CHARS} characters")
        return value
    if value is None or isinstance(value, bool | int | float):
        return value
    # Undefined, generators, ranges...: turn into JSON-friendly values.
    if isinstance(value, range):
        return _bounded(list(value))
    return str(value)


def evaluate(expr: str, context: dict[str, Any]) -> Any:
    """Evaluate a bare expression (`trigger.body.x > 3`); braces around it are accepted."""
    token = _iterations.set([0])
    try:
        compiled = _compile_single(_strip_braces(expr))
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
    finally:
        _iterations.reset(token)


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
        token = _iterations.set([0])
        try:
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
        finally:
            _iterations.reset(token)
        return _bounded(text)
    if isinstance(value, dict):
        return {str(render(k, context)): render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render(item, context) for item in value]
    return value


def referenced_names(source: str) -> set[str]:
    """Top-level names an expression reads (for diagnostics)."""
    try:
        tree = environment().parse(source)
    except TemplateSyntaxError:
        return set()
    return {node.name for node in tree.find_all(nodes.Name)}
