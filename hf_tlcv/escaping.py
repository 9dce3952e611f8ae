r"""Text from strangers inside Markdown: shown as the characters it is made of, never as markup.

Class names come from folder names in an uploaded zip, repository ids and file names are typed by visitors, and
all of them end up in Markdown (the Space's messages, the pushed model card). A folder named
``[click me](javascript:alert(1))`` or ``<img src=x onerror=...>`` must read as that text, not become a link or an
element. [`escape_markdown`] backslash-escapes every character that can start inline markup in CommonMark, GitHub
Flavored Markdown and Gradio's renderer (LaTeX `$`), and the characters that start a block at the beginning of a
line. It is meant for inline text: line breaks become spaces, so one name cannot open a heading, a list or a table
row below the line it sits in.

Names shown as code (a model id, a column, a data file) go through [`markdown_code`] instead: a code span shows its
characters as they are (no backslash escapes inside one), so it is fenced with more backticks than the name holds.

Visible URLs may still be turned into links by renderers that linkify bare text (GFM, markdown-it's linkify): such a
link shows its own target, so it cannot hide a `javascript:` destination behind innocent words.

Example:
```python
>>> from hf_tlcv.escaping import escape_markdown
>>> escape_markdown("[click me](javascript:alert(1))")
'\\[click me\\](javascript:alert(1))'
>>> escape_markdown("cat_photos")  # an underscore inside a word starts nothing
'cat_photos'
>>> escape_markdown("a|b <svg onload=alert(3)>")  # a table cell stays one cell, HTML stays text
'a\\|b \\<svg onload=alert(3)\\>'
>>> markdown_code("my`model")
'``my`model``'

```
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

__all__ = ["escape_markdown", "markdown_code", "markdown_link"]

# Anywhere in a line: emphasis and strong (*), code spans (`), links and images ([ ]), raw HTML and autolinks (< >),
# entities (&), escapes themselves (\), GFM tables (|) and strikethrough (~), Gradio's LaTeX delimiters ($).
_INLINE = re.compile(r"([\\`*\[\]<>&|~$])")
# `_` opens or closes emphasis only at a word edge (CommonMark's intraword rule), so snake_case stays readable.
_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
# At the start of a line: headings (#), block quotes (>), list items (- + and "1." / "1)"), setext underlines (=),
# thematic breaks (- and _ runs), fenced code (``` and ~~~, already escaped above).
_LINE_START = re.compile(r"^(\s*)([#>+=-]|\d+(?=[.)]))")
# Characters that reorder or hide text on screen (bidirectional overrides and isolates, zero-width marks other than
# the joiners emoji need): a class name must look like what it is.
_INVISIBLE = dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200B, 0x200E, 0x200F, 0xFEFF])


def _one_line(text: object) -> str:
    """`str(text)` without the characters that hide or reorder text, control characters (line breaks) as spaces."""
    text = str(text).translate(_INVISIBLE)
    return "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)


def escape_markdown(text: object) -> str:
    """`text` as inline Markdown that renders as exactly its characters.

    Args:
        text (`object`): anything; converted with `str()`.

    Returns:
        `str`: one line (control characters, line breaks included, become spaces; bidirectional overrides are
        removed) in which every character that could start Markdown or HTML markup is backslash-escaped.
    """
    text = _one_line(text)
    text = _INLINE.sub(r"\\\1", text)
    text = _UNDERSCORE.sub(r"\\_", text)
    match = _LINE_START.match(text)
    if match:
        lead, marker = match.groups()
        if marker[0].isdigit():  # "1." -> "1\." : the digits stay, the list delimiter is escaped
            rest = text[match.end():]
            return f"{lead}{marker}\\{rest}"
        text = f"{lead}\\{marker}{text[match.end():]}"
    return text


def markdown_code(text: object) -> str:
    """`text` as an inline code span that renders as exactly its characters, on one line.

    Inside a code span nothing is markup (HTML, links and emphasis are shown as typed) and backslashes are literal, so
    the span is fenced with one backtick more than the longest run of backticks in `text`, and padded with a space
    where `text` starts or ends with a backtick (CommonMark strips one space from each side). Not for table cells: a
    `|` still ends a GFM table cell inside a code span; cells take [`escape_markdown`].

    Args:
        text (`object`): anything; converted with `str()`.
    """
    text = _one_line(text)
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or (text.startswith(" ") and text.endswith(" ")) else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def markdown_link(text: object, url: str) -> str:
    """A Markdown link whose visible text is `text` (escaped) and whose target is `url`, percent-encoded so that
    spaces, parentheses and angle brackets cannot end the destination early.

    Args:
        text (`object`): the visible text (converted with `str()`), escaped with [`escape_markdown`].
        url (`str`): an `http://` or `https://` URL; anything else raises, since a link to `javascript:` or
            `data:` is never what a caller means.

    Returns:
        `str`: ``[text](url)``.
    """
    if not re.match(r"(?i)https?://", url):
        raise ValueError(f"Only http(s) links are written into Markdown; got {url[:40]!r}.")
    return f"[{escape_markdown(text)}]({quote(url, safe=':/?#&=%@+,;~')})"
