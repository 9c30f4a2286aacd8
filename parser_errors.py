"""jsonargparse's parse errors as one line: the flag, what it accepts, what it got.

A wrong value deep in a config (a method name in a callback's list, a datamodule argument) makes
jsonargparse print the whole usage and a tree of every type it tried (60 lines for one typo). The
tree's most specific branch names the key and the accepted values; that branch is the message.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re

_PARSER_KEY = re.compile(r'^\s*(?:- )?Parser key "([^"]+)":\s*(.*)$')
_PROBLEM = re.compile(r"^(\s*)- Problem with given class_path '([^']+)':")
_NOT_ACCEPTED = re.compile(r"Option '([^']+)' is not accepted")
_EXPECTED = re.compile(r"(?:Expected an? |expects )(.+?)(?:\. Got value: (.*)|: .*)?$")
_GIVEN = re.compile(r"^\s*Given value: (.*)$")
_NESTED = re.compile(r"NestedArg\(key='([^']+)', val=(.*)\)$")
_LITERAL = re.compile(r"^typing\.Literal\[(.*)\]$")
_CLASS = re.compile(r"^<class '(?:[\w.]+\.)?(\w+)'>$")
_ARTICLES = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string", "list": "a list"}
_ARTICLES |= {"dict": "a mapping, e.g. {key: value}", "Sequence": "a list, e.g. [a, b]"}


def one_line(message: str, subcommand: str | None = None) -> str:
    """The flag, what it accepts and what it got, from jsonargparse's error ``message``.

    >>> one_line('''Parser key "data":
    ...   Does not validate against any of the Union subtypes
    ...   Errors:
    ...     - Problem with given class_path 'datamodules.TextDataModule':
    ...         Parser key "vectorizer":
    ...           Expected a typing.Literal['tfidf', 'count']. Got value: hash
    ...     - Expected a <class 'NoneType'>
    ...   Given value: NestedArg(key='vectorizer', val='hash')''', "fit")
    "--data.vectorizer: expected one of (tfidf, count), got 'hash'. See `python cli.py fit --help`."
    """
    lines = message.strip().splitlines()
    see = f" See `python cli.py {subcommand or ''} --help`.".replace("  ", " ")
    first = _PARSER_KEY.match(lines[0]) if lines else None
    if first is None:
        return " ".join(line.strip() for line in lines).rstrip(".") + "." + see
    key, rest = first.groups()
    if rest:  # e.g. Parser key "config": File does not exist: ...
        return f"--{key}: {rest.rstrip('.')}.{see}"
    branch, class_path = _specific_branch(lines[1:])
    nested = _nested_key(lines)
    if class_path is not None and (option := _NOT_ACCEPTED.search("\n".join(branch))):
        name = option.group(1)
        hint = _closest(class_path, name.split(".")[0])
        return f"--{key}.{name} is not an argument of {class_path}{hint}.{see}"
    inner = [m.group(1) for line in branch if (m := _PARSER_KEY.match(line))]
    flag = f"--{key}.{nested}" if nested else ".".join([f"--{key}", *inner])
    expected, got = _expected(branch)
    got = got if got is not None else _given(lines)
    return f"{flag}: expected {expected}, got {got!r}.{see}"


def _specific_branch(lines: list[str]) -> tuple[list[str], str | None]:
    """The lines of the first ``Problem with given class_path`` branch (the configured class; the others are
    the generic base classes jsonargparse also tried), or all lines when there is none."""
    for i, line in enumerate(lines):
        if match := _PROBLEM.match(line):
            indent = len(match.group(1))
            end = next(
                (j for j in range(i + 1, len(lines)) if lines[j].strip() and _indent(lines[j]) <= indent), len(lines)
            )
            return lines[i + 1 : end], match.group(2)
    return lines, None


def _expected(lines: list[str]) -> tuple[str, str | None]:
    """The innermost accepted type in words, and the value it was given when the line says."""
    found = [(_indent(line), m) for line in lines if (m := _EXPECTED.search(line)) and "NoneType" not in m.group(1)]
    found = [(i, m) for i, m in found if not m.group(1).startswith(("path", "dot import"))] or found
    if not found:
        return "another value", None
    match = max(found, key=lambda found: found[0])[1]  # the deepest
    kind, got = match.group(1).rstrip("."), match.group(2)
    if literal := _LITERAL.match(kind):
        kind = f"one of ({', '.join(v.strip().strip(chr(39)) for v in literal.group(1).split(','))})"
    elif simple := _CLASS.match(kind):
        kind = _ARTICLES.get(simple.group(1), f"a {simple.group(1)}")
    return kind, got


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _given(lines: list[str]) -> str | None:
    """The innermost ``Given value:``, without jsonargparse's ``NestedArg`` wrapper."""
    values = [m.group(1) for line in lines if (m := _GIVEN.match(line))]
    if not values:
        return None
    value = values[0].split(". Got value: ")[0]
    if nested := _NESTED.match(value):
        value = nested.group(2).strip("'")
    return value


def _nested_key(lines: list[str]) -> str | None:
    """The key below the top one as the user wrote it (``NestedArg(key='optimizer.init_args.lr')``)."""
    for line in reversed(lines):
        if (given := _GIVEN.match(line)) and (nested := _NESTED.match(given.group(1))):
            return nested.group(1)
    return None


def _closest(class_path: str, name: str) -> str:
    """`` (did you mean `x`?)`` for the constructor argument of ``class_path`` closest to ``name``."""
    module, _, attribute = class_path.rpartition(".")
    try:
        parameters = list(inspect.signature(getattr(importlib.import_module(module), attribute)).parameters)
    except (ImportError, AttributeError, TypeError, ValueError):
        return ""
    close = difflib.get_close_matches(name, parameters, n=1)
    return f" (did you mean `{close[0]}`?)" if close else f" (its arguments: {', '.join(parameters)})"
