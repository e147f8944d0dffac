"""YAML from people (the ICP, sequence definitions), read without its expensive parts.

``yaml.safe_load`` builds no objects, but it still expands aliases: a 523-byte document of
nested aliases sent to ``PUT /icp`` cost 2.2 s and 130 MB (issue 15). Nothing Clientflow reads
needs anchors or aliases, so they are refused, as are documents over ``MAX_BYTES`` or nested
deeper than ``MAX_DEPTH``, and text no encoder can write back (a lone UTF-16 surrogate from a
``"\\ud800"`` escape).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

# The largest document shipped (an ICP, a sequence) is under 1 KiB; PyYAML's pure-Python
# parser takes about 1 s per 100 KiB, so the bound also bounds the time spent on one request.
MAX_BYTES = 64 * 1024
MAX_DEPTH = 32
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class UnsafeYaml(yaml.YAMLError):
    """A document refused before it could cost anything: too large, too deep, or with an
    anchor, an alias or a lone surrogate."""


class _Loader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        line = event.start_mark.line + 1 if event.start_mark else "?"
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise UnsafeYaml(f"anchors and aliases (&name, *name) are not accepted (line {line})")
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise UnsafeYaml(f"nested deeper than {MAX_DEPTH} levels (line {line})")
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if isinstance(node, yaml.ScalarNode) and _LONE_SURROGATE.search(node.value):
            raise UnsafeYaml(f"a lone UTF-16 surrogate (\\ud800-\\udfff) is not text (line {line})")
        return node


def load(text: str) -> Any:
    """The one document in ``text``, as ``yaml.safe_load`` reads it; ``UnsafeYaml`` (a
    ``yaml.YAMLError``) for a document refused as above or a value no Python type holds."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise UnsafeYaml(f"the document has {size} bytes; at most {MAX_BYTES} are read")
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except ValueError as exc:  # an integer of 5,000 digits, a date like 2026-02-30
        raise UnsafeYaml(f"a value cannot be read: {exc}") from None
    finally:
        loader.dispose()
