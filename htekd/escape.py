"""Text a client sent, made safe to show: in a log line, a terminal, a log viewer or a web page.

Pure. Escapes are JSON's (\\uXXXX, a surrogate pair above U+FFFF), so a JSON reader gets the text back.
"""

from __future__ import annotations

import json
import re

_MARKUP = re.compile("[<>&]")
# json.dumps(text, ensure_ascii=True) for a str, without building an encoder for every call.
_json_string = json.encoder.encode_basestring_ascii


def shown(text: str, markup: bool = True) -> str:
    """`text` with every character that is not printable (C0 and C1 controls such as U+0085 and
    U+009B, U+2028/U+2029, format characters such as U+202E) written as \\uXXXX, and `<`, `>`, `&`
    too unless `markup` is False (an administrator's own messages, which may quote XML)."""
    if text.isprintable() and not (markup and _MARKUP.search(text)):
        return text
    unsafe = "<>&" if markup else ""
    return "".join(char if char.isprintable() and char not in unsafe else _escaped(char) for char in text)


def quoted(text: str) -> str:
    """`text` as an ASCII JSON string with `<`, `>` and `&` escaped too: one token that no client
    text can end early nor follow with a forged field or line."""
    text = _json_string(text)
    return shown(text) if "<" in text or ">" in text or "&" in text else text  # the rest is printable ASCII


def _escaped(char: str) -> str:
    code = ord(char)
    if code > 0xFFFF:
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"
