"""Policy YAML read into a tree whose every value knows its line, and the error that reports
problems as FILE:LINE: message (every one at once, for `vouch policy check`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from ca.errors import BadInput


@dataclass(frozen=True)
class Problem:
    line: int
    message: str


class PolicyError(BadInput):
    """A policy file with problems; `problems` holds every one found, with its line."""

    def __init__(self, path: str, problems: list[Problem]) -> None:
        self.path = path
        self.problems = sorted(problems, key=lambda p: p.line)
        lines = [f"{path}:{p.line}: {p.message}" for p in self.problems]
        super().__init__(lines[0] if len(lines) == 1 else f"{len(lines)} problems in {path}",
                         detail="\n".join(lines))

    def lines(self) -> list[str]:
        return [f"{self.path}:{p.line}: {p.message}" for p in self.problems]


class Node:
    """A YAML value with the line it starts on (1-based)."""

    __slots__ = ("value", "line")

    def __init__(self, value: Any, line: int) -> None:
        self.value = value
        self.line = line


# A policy is a few levels deep; this is far beyond any real one and far below the recursion
# limit that a hostile `[[[[…` would otherwise reach.
MAX_DEPTH = 32
# The size of the file itself: a policy is a few kilobytes.
MAX_BYTES = 1024 * 1024


class _Refused(yaml.YAMLError):
    def __init__(self, problem: str, mark) -> None:
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


class _LineLoader(yaml.SafeLoader):
    """Builds Node trees so that every value knows its line; refuses duplicate keys, aliases
    (a 1 KB "billion laughs" of aliases took 20 s and 800 MB to expand) and deep nesting."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise _Refused("aliases (*name) are not allowed in a policy file: write the value out",
                           self.peek_event().start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"nested more than {MAX_DEPTH} levels deep",
                               self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _construct(loader: _LineLoader, node: yaml.Node) -> Node:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        mapping: dict[str, tuple[int, Node]] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if isinstance(key, Node):
                key = key.value
            if key in mapping:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            mapping[key] = (key_node.start_mark.line + 1, _construct(loader, value_node))
        return Node(mapping, line)
    if isinstance(node, yaml.SequenceNode):
        return Node([_construct(loader, item) for item in node.value], line)
    return Node(loader.construct_scalar(node) if node.tag == "tag:yaml.org,2002:str"
                else yaml.SafeLoader.construct_object(loader, node), line)


def read_yaml(text: str, path: str) -> Node:
    """Parse one YAML document into a Node tree; raises PolicyError with the offending line."""
    if len(text) > MAX_BYTES:
        raise PolicyError(path, [Problem(1, f"the policy file is {len(text)} characters long; a "
                                            f"policy is a few kilobytes (at most {MAX_BYTES})")])
    loader = _LineLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise PolicyError(path, [Problem(1, "the policy file is empty: it needs at least `targets:`")])
        tree = _construct(loader, node)
    except yaml.constructor.ConstructorError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        raise PolicyError(path, [Problem(line, exc.problem or str(exc))]) from None
    except _Refused as exc:
        raise PolicyError(path, [Problem(exc.problem_mark.line + 1, exc.problem)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark else 1
        reason = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(path, [Problem(line, f"YAML syntax error: {reason}")]) from None
    except TypeError:
        raise PolicyError(path, [Problem(1, "a mapping key is not a plain value")]) from None
    finally:
        loader.dispose()
    return tree
