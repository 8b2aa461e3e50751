"""The notes' architecture notation: ``INPUT [32x32x3] -> [[CONV3-64 -> RELU]*2 -> POOL2]*3 -> FC-10``.

A spec goes through four visible stages (as ConvNetJS desugars its layer definitions before shape
inference), each a public function that can be called and tested on its own:

1. :func:`tokenize` (text -> :class:`Token` list, each with its character position),
2. :func:`parse` (tokens -> a tree of :class:`Group` ``[ ... ]*N`` nodes and :class:`Item` layer leaves),
3. :func:`expand` (tree -> flat list of :class:`Item`, every repeat written out, N may be 0),
4. :func:`infer_shapes` (items + input volume -> per-layer volumes, the notes' (W - F + 2P)/S + 1 checked
   for every CONV/LOCAL/POOL; a bad fit raises :class:`volnet.ShapeError` naming the layer, the formula
   with its numbers, and the spec with a caret ``^`` under the layer),

then :func:`to_layers` makes :mod:`volnet.layers` objects and :func:`build` returns a built
:class:`volnet.net.Sequential`.

Notation (case-insensitive; whitespace and newlines are free; ``#`` starts a comment to the end of the
line, on a line of its own or after a layer; layers are separated by ``->``, ``→`` or a lone ``-`` between
spaces, as the notes write ``[INPUT - CONV - RELU - POOL - FC]``):

- ``INPUT [WxHxD]``: the input volume, W width, H height, D depth; ``INPUT [28x28]`` means D = 1.
- ``CONVF-K``: K filters of size FxF, stride 1, size-preserving padding P = (F_eff - 1)//2.
  Suffixes: stride ``/S`` and zero padding ``pP`` (``CONV7-96/2``, ``CONV11-96/4p0``), dilation ``dD``
  (``CONV3-64d2``, or ``DCONV3-64 d2``; PyTorch's convention, 1 = ordinary filter), non-square sizes
  written h x w (``CONV3x5-16``: F_h=3, F_w=5; ``/2x1``).
- ``LOCALF-K``: locally connected (no parameter sharing), same suffixes as CONV.
- ``POOL2``, ``POOL3/2``, ``POOL3/2p1``: max pooling F (stride F unless ``/S``; ``MAXPOOL`` alias);
  ``AVGPOOL2``, ``L2POOL2``: average and L2-norm pooling; ``GAP``: global average pooling.
- ``FC-N``: fully-connected layer of N neurons.
- ``RELU``, ``SOFTMAX``, ``FLATTEN``, ``BN``, ``LRN``/``LRN5``, ``DROPOUT``/``DROPOUT0.5``.
- ``[ ... ]*N``: the group N times (N = 0 drops it; ``[ ... ]`` alone is N = 1); groups nest.
- ``floor`` / ``ceil``: a trailing word on CONV/LOCAL/POOL (``CONV7-64/2p3 floor``, ``POOL3/2 ceil``): how
  a non-integer (W - F + 2P)/S + 1 is resolved (crop / pad the rest); without it the layer must fit.

The notes' ``POOL?`` (an optional pool) and ``...`` are not layers: they stop with a hint.

>>> net = build("INPUT [32x32x3] -> [CONV3-16 -> RELU -> POOL2]*2 -> FC-10")
>>> net.spec()
'INPUT [32x32x3] -> CONV3-16 -> RELU -> POOL2 -> CONV3-16 -> RELU -> POOL2 -> FC-10'

Shapes in code are per-sample ``(C, H, W)`` = the notes' ``(D, H, W)``; the notation prints ``[WxHxD]``.
See: ConvNetJS ``net.makeLayers`` (desugar + shape inference), Keras ``model.summary()``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from volnet.errors import ShapeError, SpecError, VolnetError
from volnet.layers.base import format_shape as _format_shape

Shape = tuple[int, ...]

#: Keywords the notation knows (for "did you mean" suggestions).
KEYWORDS = (
    "INPUT", "CONV", "DCONV", "LOCAL", "POOL", "MAXPOOL", "AVGPOOL", "L2POOL", "GAP", "RELU", "FC", "LRN",
    "BN", "DROPOUT", "SOFTMAX", "FLATTEN",
)
#: Trailing words that modify the layer before them (``CONV7-64/2p3 floor``, ``DCONV3-64 d2``).
MODIFIERS = ("FLOOR", "CEIL", "STRICT")
#: Canonical keyword of each alias.
ALIASES = {"MAXPOOL": "POOL", "BATCHNORM": "BN", "GLOBALAVGPOOL": "GAP", "RECTIFIER": "RELU"}

# --------------------------------------------------------------------------------------------------
# stage 1: tokens
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    """One lexical token: ``kind`` is WORD, SHAPE, ARROW, LBRACK, RBRACK or REPEAT.

    ``pos``/``end`` are character offsets into ``source`` (the whole spec text); ``value`` is the volume
    ``(C, H, W)`` of a SHAPE token and the count N of a REPEAT token.
    """

    kind: str
    text: str
    pos: int
    end: int
    value: Any = None
    source: str = field(default="", repr=False, compare=False)


_WS = re.compile(r"\s+|#[^\n]*")  # whitespace and comments (``# ...`` to the end of the line)
#: Most digits of a number in a spec (sizes and counts), deepest ``[ ... ]`` nesting, most layers.
MAX_DIGITS = 9
MAX_NESTING = 50
_LONG_NUMBER = re.compile(rf"\d{{{MAX_DIGITS + 1},}}")
_ARROW = re.compile(r"->|→|=>|⟶|-(?=\s|$)")
_SHAPE = re.compile(r"\[\s*(\d+)\s*[x×X]\s*(\d+)\s*(?:[x×X]\s*(\d+)\s*)?\]")
_REPEAT = re.compile(r"\*\s*(\d+)")
# a word: letters, digits and the suffix characters; a '-' belongs to it unless it starts an arrow
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_.?/:]*(?:-(?![>\s])[A-Za-z0-9_.?/]*)*")


def caret(source: str, pos: int, end: int | None = None, indent: str = "  ") -> str:
    """The source line holding ``pos`` and, below it, ``^`` under ``source[pos:end]``.

    Long lines are cut to a window around the token so the caret stays on one terminal line.

    >>> print(caret("INPUT [8x8x3] -> CONV3-8 -> RELUU", 28, 33))
      INPUT [8x8x3] -> CONV3-8 -> RELUU
                                  ^^^^^
    """
    end = pos + 1 if end is None or end <= pos else end
    start = source.rfind("\n", 0, pos) + 1
    stop = source.find("\n", pos)
    stop = len(source) if stop < 0 else stop
    line = source[start:stop].rstrip()
    col = pos - start
    width = max(1, min(end, stop) - pos)
    if len(line) > 100:  # window of ~100 characters around the token
        lo = max(0, col - 50)
        hi = min(len(line), max(col + width + 30, lo + 100))
        prefix = "..." if lo > 0 else ""
        suffix = "..." if hi < len(line) else ""
        line = prefix + line[lo:hi] + suffix
        col = col - lo + len(prefix)
        width = min(width, hi - (lo + col - len(prefix)))
    return f"{indent}{line}\n{indent}{' ' * col}{'^' * max(1, width)}"


def where(source: str, pos: int) -> str:
    """``line L, column C`` (1-based) of offset ``pos`` in ``source``."""
    line = source.count("\n", 0, pos) + 1
    col = pos - (source.rfind("\n", 0, pos) + 1) + 1
    return f"line {line}, column {col}"


def _error(msg: str, source: str, pos: int, end: int | None = None, cls: type[VolnetError] = SpecError):
    """A one-line message followed by the caret display (the CLI prints both)."""
    return cls(f"{msg} ({where(source, pos)})\n{caret(source, pos, end)}")


def tokenize(text: str) -> list[Token]:
    """Split a spec into tokens, each knowing its position in ``text``.

    >>> [t.text for t in tokenize("INPUT [32x32x3] -> [CONV3-64 -> RELU]*2")]
    ['INPUT', '[32x32x3]', '->', '[', 'CONV3-64', '->', 'RELU', ']', '*2']
    """
    if not isinstance(text, str):
        raise SpecError(f"a spec must be a string, got {type(text).__name__}")
    tokens: list[Token] = []
    i, n = 0, len(text)
    long = _LONG_NUMBER.search(text)
    if long:
        num = long.group(0)[:12] + ("..." if len(long.group(0)) > 12 else "")
        raise _error(f"the number {num} is too large (at most {MAX_DIGITS} digits); sizes and repeat counts "
                     "are small integers", text, long.start(), min(long.end(), long.start() + 40))
    depth = 0
    for j in (range(n) if text.count("[") > MAX_NESTING else ()):
        depth += 1 if text[j] == "[" else -1 if text[j] == "]" else 0
        if depth > MAX_NESTING:
            raise _error(f"groups [ ... ] nested more than {MAX_NESTING} deep; flatten the spec", text, j)
    while i < n:
        m = _WS.match(text, i)
        if m:
            i = m.end()
            continue
        kind = ""
        for kind, rx in (("ARROW", _ARROW), ("SHAPE", _SHAPE), ("REPEAT", _REPEAT), ("WORD", _WORD)):  # noqa: B007
            m = rx.match(text, i)
            if m:
                break
        if m:
            value: Any = None
            if kind == "SHAPE":
                w, h, d = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1)
                value = (d, h, w)
            elif kind == "REPEAT":
                value = int(m.group(1))
            tokens.append(Token(kind, m.group(0), i, m.end(), value, text))
            i = m.end()
            continue
        ch = text[i]
        if ch in "[]":
            tokens.append(Token("LBRACK" if ch == "[" else "RBRACK", ch, i, i + 1, None, text))
            i += 1
            continue
        if text.startswith("...", i) or ch == "…":
            j = i + (1 if ch == "…" else 3)
            raise _error("'...' stands for layers left out; write every layer (use [ ... ]*N for repeats)",
                         text, i, j)
        if ch == "*":
            raise _error("'*' must be followed by a repeat count, as in [CONV3-64 -> RELU]*2", text, i)
        if ch.isdigit():
            j = i
            while j < n and not text[j].isspace() and text[j] not in "[]":
                j += 1
            raise _error(f"unexpected number {text[i:j]!r}: numbers belong to the layer word, as in FC-10 or "
                         "CONV3-64, and a volume is written INPUT [WxHxD]", text, i, j)
        raise _error(f"unexpected character {ch!r}", text, i)
    return tokens


# --------------------------------------------------------------------------------------------------
# stage 2: tree
# --------------------------------------------------------------------------------------------------


@dataclass
class Item:
    """One layer of the notation: ``kind`` (canonical keyword: ``CONV``, ``POOL``, ..., or ``INPUT``),
    ``kwargs`` for the :mod:`volnet.layers` class, and where it was written (``text``, ``pos``, ``end``).
    """

    kind: str
    kwargs: dict[str, Any]
    text: str
    pos: int
    end: int
    source: str = field(default="", repr=False, compare=False)

    def where(self) -> str:
        return where(self.source, self.pos)

    def caret(self) -> str:
        return caret(self.source, self.pos, self.end)


@dataclass
class Group:
    """``[ items ]*repeat``; the whole spec is a Group with repeat 1."""

    items: list[Item | Group]
    repeat: int = 1
    pos: int = 0
    end: int = 0
    source: str = field(default="", repr=False, compare=False)


_NUM = r"(\d+)(?:[xX](\d+))?"
_CONV_RX = re.compile(rf"^(D?CONV|LOCAL){_NUM}-(\d+)((?:/{_NUM}|P{_NUM}|D{_NUM})*)$")
_POOL_RX = re.compile(rf"^(MAX|AVG|L2)?POOL(?:{_NUM})?((?:/{_NUM}|P{_NUM})*)$")
_SUFFIX_RX = re.compile(rf"([/PD]){_NUM}")
_FC_RX = re.compile(r"^FC-?(\d+)$")
_LRN_RX = re.compile(r"^LRN-?(\d+)?$")
_DROPOUT_RX = re.compile(r"^DROPOUT-?(\d*\.?\d+(?:E-?\d+)?)?$")
_DIL_RX = re.compile(rf"^D{_NUM}$")

_USAGE = {
    "CONV": "CONV{F}-{K}, e.g. CONV3-64 (K filters of FxF), CONV7-96/2 (stride 2), CONV11-96/4p0 (pad 0)",
    "DCONV": "DCONV{F}-{K} d{D}, e.g. DCONV3-64 d2 (dilation 2)",
    "LOCAL": "LOCAL{F}-{K}, e.g. LOCAL3-32 (locally connected, same suffixes as CONV)",
    "POOL": "POOL{F}[/{S}][p{P}], e.g. POOL2 or POOL3/2",
    "FC": "FC-{N}, e.g. FC-10 (N neurons)",
    "LRN": "LRN or LRN{size}, e.g. LRN5",
    "DROPOUT": "DROPOUT or DROPOUT{p}, e.g. DROPOUT0.5",
    "INPUT": "INPUT [WxHxD], e.g. INPUT [32x32x3]",
}


def _pair_text(a: str, b: str | None, name: str) -> int | tuple[int, int]:
    """``3`` -> 3, ``3x5`` -> (3, 5): a non-square size is written h x w, as the code's (h, w) pairs."""
    if b is None:
        return int(a)
    return (int(a), int(b))


def _head(word: str) -> str:
    """The keyword part of a layer word: ``CONV3-64`` -> ``CONV``, ``L2POOL3/2`` -> ``L2POOL``."""
    for kw in sorted(KEYWORDS + tuple(ALIASES), key=len, reverse=True):
        if word.startswith(kw) and not word[len(kw):len(kw) + 1].isalpha():
            return kw
    m = re.match(r"[A-Z_]+", word)
    return m.group(0) if m else word


def _suggest(word: str) -> str:
    """``did you mean`` text for an unknown word (difflib on the keyword, the rest of the word kept)."""
    head = _head(word)
    rest = word[len(head):]
    cands = difflib.get_close_matches(head, KEYWORDS + MODIFIERS + tuple(ALIASES), n=1, cutoff=0.5)
    if not cands:
        cands = difflib.get_close_matches(word, KEYWORDS, n=1, cutoff=0.4)
        rest = ""
    if not cands:
        return f"known layers: {', '.join(KEYWORDS)}"
    return f"did you mean {cands[0] + rest!r}?"


def _layer_item(tok: Token) -> Item:
    """Parse one layer word (e.g. ``CONV11-96/4p0``) into an :class:`Item`."""
    word = tok.text.upper()
    src = tok.source

    def bad(msg: str) -> SpecError:
        return _error(msg, src, tok.pos, tok.end)

    head = _head(word)
    if word.endswith("?"):
        raise bad(
            f"{tok.text!r} is not a layer: the notes write POOL? for an optional pool; "
            f"write {tok.text[:-1] or 'POOL'}2 to have one or leave it out"
        )
    m = _CONV_RX.match(word)
    if m:
        kw_name, f1, f2, k, suffixes = m.group(1), m.group(2), m.group(3), m.group(4), m.group(5)
        kwargs: dict[str, Any] = {"K": int(k), "F": _pair_text(f1, f2, "F")}
        seen: set[str] = set()
        for sm in _SUFFIX_RX.finditer(suffixes):
            key = {"/": "stride", "P": "pad", "D": "dilation"}[sm.group(1)]
            if key in seen:
                raise bad(f"{tok.text!r} gives the {key} twice; write it once, as in CONV7-96/2p3")
            seen.add(key)
            kwargs[key] = _pair_text(sm.group(2), sm.group(3), key)
        kind = "LOCAL" if kw_name == "LOCAL" else "CONV"
        item = Item(kind, kwargs, tok.text, tok.pos, tok.end, src)
        if kw_name == "DCONV":
            item.kwargs["_dconv"] = True
        return item
    m = _POOL_RX.match(word)
    if m and (head in ("POOL", "MAXPOOL", "AVGPOOL", "L2POOL")):
        mode = {"MAX": "max", None: "max", "AVG": "avg", "L2": "l2"}[m.group(1)]
        kwargs = {"mode": mode}
        if m.group(2):
            kwargs["F"] = _pair_text(m.group(2), m.group(3), "F")
        seen = set()
        for sm in _SUFFIX_RX.finditer(m.group(4)):
            key = {"/": "stride", "P": "pad"}[sm.group(1)]
            if key in seen:
                raise bad(f"{tok.text!r} gives the {key} twice; write it once, as in POOL3/2p1")
            seen.add(key)
            kwargs[key] = _pair_text(sm.group(2), sm.group(3), key)
        return Item("POOL", kwargs, tok.text, tok.pos, tok.end, src)
    simple = {"GAP": "GAP", "RELU": "RELU", "BN": "BN", "SOFTMAX": "SOFTMAX", "FLATTEN": "FLATTEN"}
    if word in simple or ALIASES.get(word) in simple:
        return Item(simple.get(word) or ALIASES[word], {}, tok.text, tok.pos, tok.end, src)
    m = _FC_RX.match(word)
    if m:
        return Item("FC", {"N": int(m.group(1))}, tok.text, tok.pos, tok.end, src)
    m = _LRN_RX.match(word)
    if m:
        return Item("LRN", {"size": int(m.group(1))} if m.group(1) else {}, tok.text, tok.pos, tok.end, src)
    m = _DROPOUT_RX.match(word)
    if m:
        kwargs = {}
        if m.group(1):
            p = float(m.group(1))
            if not 0.0 <= p < 1.0:
                raise bad(f"dropout probability must be in [0, 1), got {p:g}; e.g. DROPOUT0.5")
            kwargs["p"] = p
        return Item("DROPOUT", kwargs, tok.text, tok.pos, tok.end, src)
    if word == "INPUT":
        raise bad(f"INPUT needs its volume: {_USAGE['INPUT']}")
    if head in ("CONV", "DCONV", "LOCAL", "POOL", "MAXPOOL", "AVGPOOL", "L2POOL", "FC", "LRN", "DROPOUT"):
        usage = _USAGE.get(head, _USAGE["POOL"] if "POOL" in head else "")
        raise bad(f"cannot read {tok.text!r}; write {usage}")
    if word in MODIFIERS or _DIL_RX.match(word):
        raise bad(f"{tok.text!r} modifies the CONV/LOCAL/POOL layer before it, as in CONV7-64/2p3 floor")
    raise bad(f"unknown layer {tok.text!r}; {_suggest(word)}")


def _apply_modifier(item: Item, tok: Token) -> None:
    """Attach a trailing ``floor``/``ceil``/``strict`` or ``dD`` word to the layer before it."""
    word = tok.text.upper()
    src = tok.source
    if item.kind not in ("CONV", "LOCAL", "POOL"):
        raise _error(f"{tok.text!r} applies to CONV, LOCAL or POOL layers, not to {item.text!r}", src,
                     tok.pos, tok.end)
    m = _DIL_RX.match(word)
    if m:
        if item.kind == "POOL":
            raise _error(f"pooling has no dilation ({tok.text!r})", src, tok.pos, tok.end)
        if "dilation" in item.kwargs:
            raise _error(f"{item.text!r} already has a dilation", src, tok.pos, tok.end)
        item.kwargs["dilation"] = _pair_text(m.group(1), m.group(2), "dilation")
    else:
        if "fit" in item.kwargs:
            raise _error(f"{item.text!r} already has a fit word", src, tok.pos, tok.end)
        item.kwargs["fit"] = word.lower()
    item.text = src[item.pos:tok.end]
    item.end = tok.end


def _is_modifier(tok: Token) -> bool:
    return tok.kind == "WORD" and (tok.text.upper() in MODIFIERS or bool(_DIL_RX.match(tok.text.upper())))


def parse(tokens: list[Token]) -> Group:
    """Build the tree: ``seq := elem ('->' elem)*``, ``elem := layer modifier* | INPUT [WxHxD] | '[' seq ']'
    ('*' N)?``. Raises :class:`volnet.SpecError` with a caret under the offending token.
    """
    source = tokens[0].source if tokens else ""
    if not tokens:
        raise SpecError("empty spec; write e.g. INPUT [32x32x3] -> CONV3-12 -> RELU -> POOL2 -> FC-10")
    pos = 0

    def peek() -> Token | None:
        return tokens[pos] if pos < len(tokens) else None

    def expect_elem_error(tok: Token | None) -> SpecError:
        if tok is None:
            last = tokens[-1]
            return _error(f"the spec ends with {last.text!r}; a layer must follow", source, last.pos,
                          last.end)
        return _error(f"expected a layer or '[' but found {tok.text!r}", source, tok.pos, tok.end)

    def parse_seq(closing: bool) -> list[Item | Group]:
        nonlocal pos
        items: list[Item | Group] = []
        prev_text = ""
        while True:
            tok = peek()
            if tok is None or tok.kind in ("ARROW", "RBRACK", "REPEAT"):
                if tok is not None and tok.kind == "RBRACK" and closing and not items:
                    raise _error("empty group '[ ]'", source, tok.pos, tok.end)
                raise expect_elem_error(tok)
            el = parse_elem()
            items.append(el)
            prev_text = el.text if isinstance(el, Item) else source[el.pos:el.end]
            if len(prev_text) > 40:
                prev_text = prev_text[:18] + " ... " + prev_text[-17:]
            tok = peek()
            if tok is None:
                return items
            if tok.kind == "ARROW":
                pos += 1
                continue
            if tok.kind == "RBRACK":
                if closing:
                    return items
                raise _error("']' without a matching '['", source, tok.pos, tok.end)
            if tok.kind == "REPEAT":
                raise _error(f"{tok.text!r} must follow a ']', as in [CONV3-64 -> RELU]*2", source, tok.pos,
                             tok.end)
            raise _error(f"expected '->' between {prev_text!r} and {tok.text!r}", source, tok.pos, tok.end)

    def parse_elem() -> Item | Group:
        nonlocal pos
        tok = tokens[pos]
        if tok.kind == "LBRACK":
            pos += 1
            if peek() is None:
                raise _error("'[' is never closed; add ']'", source, tok.pos, tok.end)
            inner = parse_seq(closing=True)
            close = peek()
            if close is None:
                raise _error("'[' is never closed; add ']'", source, tok.pos, tok.end)
            pos += 1
            repeat, end = 1, close.end
            nxt = peek()
            if nxt is not None and nxt.kind == "REPEAT":
                repeat, end = int(nxt.value), nxt.end
                pos += 1
            return Group(inner, repeat, tok.pos, end, source)
        if tok.kind == "SHAPE":
            msg = f"a volume {tok.text} can only follow INPUT, as in INPUT {tok.text}"
            raise _error(msg, source, tok.pos, tok.end)
        if tok.kind != "WORD":
            raise expect_elem_error(tok)
        pos += 1
        word = tok.text.upper().rstrip(":")
        if word == "INPUT":
            nxt = peek()
            if nxt is not None and nxt.kind == "SHAPE":
                pos += 1
                return Item("INPUT", {"shape": nxt.value}, source[tok.pos:nxt.end], tok.pos, nxt.end, source)
            return Item("INPUT", {}, tok.text, tok.pos, tok.end, source)
        item = _layer_item(tok)
        while (nxt := peek()) is not None and _is_modifier(nxt):
            _apply_modifier(item, nxt)
            pos += 1
        if item.kwargs.pop("_dconv", False) and "dilation" not in item.kwargs:
            raise _error(f"{tok.text!r} needs a dilation: {_USAGE['DCONV']}", source, tok.pos, tok.end)
        return item

    items = parse_seq(closing=False)
    return Group(items, 1, tokens[0].pos, tokens[-1].end, source)


# --------------------------------------------------------------------------------------------------
# stage 3: flat list
# --------------------------------------------------------------------------------------------------


def expand(tree: Group) -> list[Item]:
    """Write out every ``[ ... ]*N`` (N = 0 drops the group); an INPUT item, if any, comes first."""
    from volnet.validate import MAX_LAYERS

    def count(node: Item | Group) -> int:
        if isinstance(node, Item):
            return int(node.kind != "INPUT")
        return node.repeat * sum(count(c) for c in node.items)

    total = count(tree)
    if total > MAX_LAYERS:
        raise SpecError(f"the spec expands to {total:,} layers, more than volnet's limit of {MAX_LAYERS:,}; "
                        "use fewer or smaller repeats")
    out: list[Item] = []

    def walk(node: Item | Group) -> None:
        if isinstance(node, Item):
            out.append(node)
            return
        for _ in range(node.repeat):
            for child in node.items:
                walk(child)

    walk(tree)
    for i, it in enumerate(out):
        if it.kind == "INPUT" and i > 0:
            raise _error("INPUT must come first and only once", it.source, it.pos, it.end)
    return out


# --------------------------------------------------------------------------------------------------
# stage 4: shapes; then layers
# --------------------------------------------------------------------------------------------------


class LayerShape(NamedTuple):
    """One layer with its input and output volume ``(C, H, W)`` (``(N,)`` after FC)."""

    item: Item
    layer: Any
    in_shape: Shape
    out_shape: Shape


def parse_shape(text: str | tuple[int, ...] | list[int]) -> Shape:
    """``"224x224x3"`` or ``"[224x224x3]"`` (W x H x D, the notes' order) -> ``(3, 224, 224)``; ``"28x28"``
    -> ``(1, 28, 28)``. A tuple or list is taken as the code's ``(C, H, W)`` and returned as a tuple.
    """
    if isinstance(text, (tuple, list)):
        shape = tuple(int(v) for v in text)
        if not shape or any(v < 1 for v in shape):
            raise ShapeError(f"input shape must be positive integers (C, H, W), got {text!r}")
        return shape
    m = re.fullmatch(r"\s*\[?\s*(\d+)\s*[x×X]\s*(\d+)\s*(?:[x×X]\s*(\d+)\s*)?\]?\s*", str(text))
    if m and _LONG_NUMBER.search(str(text)):
        raise ShapeError(f"volume {str(text)[:40]!r}: a size has more than {MAX_DIGITS} digits; write "
                         "WxHxD with sizes such as 32x32x3")
    if not m:
        raise ShapeError(f"cannot read the volume {text!r}; write WxHxD (width x height x depth): 32x32x3")
    w, h, d = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1)
    if min(w, h, d) < 1:
        raise ShapeError(f"volume {text!r} has a zero size; every size must be >= 1")
    return (d, h, w)


def format_shape(shape: Shape) -> str:
    """``(C, H, W)`` -> ``"[WxHxD]"`` (the notes' order); ``(N,)`` -> ``"[1x1xN]"`` as the notes print FC
    (:func:`volnet.layers.base.format_shape`)."""
    return _format_shape(shape, vector_as_volume=True)


def _default_pad(kwargs: dict[str, Any]) -> int | tuple[int, int]:
    """The notation's size-preserving padding P = (F_eff - 1)//2 per axis."""
    from volnet.ops.sizes import effective_size, pair

    fh, fw = pair(kwargs["F"], "F")
    dh, dw = pair(kwargs.get("dilation", 1), "dilation")
    ph, pw = (effective_size(fh, dh) - 1) // 2, (effective_size(fw, dw) - 1) // 2
    return ph if ph == pw else (ph, pw)


def _make_layer(item: Item) -> Any:
    from volnet import layers as L

    kw = dict(item.kwargs)
    k = item.kind
    if k in ("CONV", "LOCAL"):
        kw.setdefault("pad", _default_pad(kw))
        return (L.Conv if k == "CONV" else L.Local)(**kw)
    cls = {
        "POOL": L.Pool, "GAP": L.GlobalAvgPool, "RELU": L.ReLU, "FC": L.FC, "LRN": L.LRN, "BN": L.BatchNorm,
        "DROPOUT": L.Dropout, "SOFTMAX": L.Softmax, "FLATTEN": L.Flatten,
    }[k]
    return cls(**kw)


def to_layers(items: list[Item]) -> list[Any]:
    """One unbuilt :mod:`volnet.layers` object per layer item (INPUT items are skipped)."""
    out = []
    for i, item in enumerate(it for it in items if it.kind != "INPUT"):
        try:
            out.append(_make_layer(item))
        except VolnetError as e:
            raise _error(f"layer {i + 1} {item.text!r}: {e.line}", item.source, item.pos, item.end,
                         type(e)) from e
        except (ValueError, TypeError) as e:
            raise _error(f"layer {i + 1} {item.text!r}: {e}", item.source, item.pos, item.end) from e
    return out


def input_shape_of(items: list[Item], input_shape: Any = None) -> Shape:
    """The input volume: ``input_shape`` when given (overrides), else the spec's ``INPUT [WxHxD]``."""
    if input_shape is not None:
        return parse_shape(input_shape)
    if items and items[0].kind == "INPUT" and "shape" in items[0].kwargs:
        return tuple(items[0].kwargs["shape"])
    raise SpecError("no input volume: start the spec with INPUT [WxHxD] (e.g. INPUT [32x32x3]) "
                    "or give the input shape (--input 32x32x3)")


def _shapes(items: list[Item], layers: list[Any], shape: Shape) -> list[LayerShape]:
    rows = []
    layer_items = [it for it in items if it.kind != "INPUT"]
    for i, (item, layer) in enumerate(zip(layer_items, layers)):
        try:
            out = tuple(layer.output_shape(shape))
        except VolnetError as e:
            cls = type(e) if isinstance(e, (ShapeError, SpecError)) else ShapeError
            # in the notation the choice is a word after the layer, not the Python keyword fit=
            fit = isinstance(e, ShapeError) and e.fit_hint and e.detail is not None
            msg = f"{e.detail}; or write '{item.text} floor' (crop) or '{item.text} ceil' (pad the rest)" \
                if fit else e.line
            raise _error(
                f"layer {i + 1} {item.text!r} on input {format_shape(shape)}: {msg}",
                item.source, item.pos, item.end, cls,
            ) from e
        rows.append(LayerShape(item, layer, tuple(shape), out))
        shape = out
    return rows


def infer_shapes(items: list[Item], input_shape: Any = None) -> list[LayerShape]:
    """Per layer: ``LayerShape(item, layer, in_shape, out_shape)``, volumes as ``(C, H, W)``.

    ``input_shape`` (``(C, H, W)`` or ``"WxHxD"``) overrides the spec's INPUT. A layer that does not fit
    raises :class:`volnet.ShapeError` whose first line names the layer, its position and the notes'
    formula with numbers, e.g. ``layer 1 'CONV3-8/2p0' on input [10x10x3]: ... (10 - 3 + 2*0)/2 + 1 = 4.5
    is not an integer ...``, followed by the spec with ``^`` under the layer. Nothing is allocated.
    """
    shape = input_shape_of(items, input_shape)
    return _shapes(items, to_layers(items), shape)


def items_of(spec: str) -> list[Item]:
    """``expand(parse(tokenize(spec)))``."""
    return expand(parse(tokenize(spec)))


def unbuilt(spec: str, input_shape: Any = None) -> tuple[Any, Shape]:
    """An unbuilt :class:`volnet.net.Sequential` for ``spec`` (shapes checked, nothing allocated) and its
    input volume ``(C, H, W)``. :func:`volnet.summary` uses this to count VGG-16 instantly.
    """
    from volnet.net import Sequential

    items = items_of(spec)
    shape = input_shape_of(items, input_shape)
    layers = to_layers(items)
    _shapes(items, layers, shape)
    return Sequential(layers), shape


def build(spec: str, seed: int = 0, input_shape: Any = None) -> Any:
    """Parse ``spec``, check every volume, and return a built :class:`volnet.net.Sequential`.

    ``input_shape`` (``(C, H, W)`` or ``"WxHxD"``) overrides the spec's ``INPUT [WxHxD]``. ``seed`` seeds the
    He initialisation. ``build(net.spec())`` rebuilds the same architecture.

    >>> net = build("INPUT [32x32x3] -> CONV5-12 -> RELU -> POOL2 -> FC-10")
    >>> [tuple(s) for _, _, _, s in net.layer_shapes((3, 32, 32))]
    [(12, 32, 32), (12, 32, 32), (12, 16, 16), (10,)]
    """
    net, shape = unbuilt(spec, input_shape)
    net.build(shape, seed)
    return net
