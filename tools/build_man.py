#!/usr/bin/env python3
"""Build the man pages from their Markdown source, so the docs and `man htekd` never disagree.

    tools/build_man.py           # docs/htekd.md -> man/htekd.1, docs/htekd.conf.md -> man/htekd.conf.5
    tools/build_man.py --check   # exit 1, naming the page, when a man page is not what its source gives

The source is a small subset of Markdown: `# name(section)`, `##` sections, `###` subsections,
paragraphs, `term` lines followed by `: definition` lines, `- ` lists, fenced or indented code,
and inline `code`, *emphasis*, **strong** and [links](url).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAGES = {"docs/htekd.md": "man/htekd.1", "docs/htekd.conf.md": "man/htekd.conf.5"}


def escape(text: str) -> str:
    return text.replace("\\", "\\e")


def inline(text: str) -> str:
    """Markdown inline markup to roff font changes; a leading dot or quote cannot start a request."""
    def code(match: re.Match) -> str:
        return "\\fB" + escape(match.group(1)).replace("-", "\\-") + "\\fR"

    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(code(re.match(r"`(.*)`", part)))
            continue
        part = escape(part)
        part = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", part)
        part = re.sub(r"\*\*([^*]+)\*\*", r"\\fB\1\\fR", part)
        part = re.sub(r"\*([^*]+)\*", r"\\fI\1\\fR", part)
        out.append(part)
    line = "".join(out)
    return "\\&" + line if line.startswith((".", "'")) else line


def code_block(lines: list[str]) -> list[str]:
    body = [("\\&" if line.startswith((".", "'")) else "") + escape(line) for line in lines]
    return [".PP", ".RS 4", ".EX", *body, ".EE", ".RE"]


def convert(markdown: str, version: str) -> str:
    lines = markdown.splitlines()
    out: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line.strip():
            index += 1
        elif line.startswith("# "):
            name, section = re.fullmatch(r"# (\S+)\((\d)\)", line).groups()
            out.append(f'.TH "{name.upper()}" "{section}" "" "htekd {version}" "htekd manual"')
            index += 1
        elif line.startswith("### "):
            out.append(".SS " + inline(line[4:]))
            index += 1
        elif line.startswith("## "):
            out.append(".SH " + inline(line[3:]))
            index += 1
        elif line.startswith("```"):
            end = lines.index("```", index + 1)
            out += code_block(lines[index + 1:end])
            index = end + 1
        elif line.startswith("    "):
            block = []
            while index < len(lines) and (lines[index].startswith("    ") or not lines[index].strip()):
                block.append(lines[index][4:])
                index += 1
            while block and not block[-1].strip():
                block.pop()
            out += code_block(block)
        elif line.startswith("- "):
            out += [".IP \\(bu 2", inline(line[2:])]
            index += 1
            while index < len(lines) and lines[index].startswith("  ") and lines[index].strip():
                out.append(inline(lines[index].strip()))
                index += 1
        else:
            paragraph = []
            while index < len(lines) and lines[index].strip() and not lines[index].startswith(("#", "```", "- ")):
                paragraph.append(lines[index])
                index += 1
            if len(paragraph) > 1 and paragraph[1].startswith(": "):
                out += [".TP", inline(paragraph[0]), inline(paragraph[1][2:])]
                out += [inline(text) for text in paragraph[2:]]
            else:
                out.append(".PP")
                out += [inline(text) for text in paragraph]
    return "\n".join(out) + "\n"


def version() -> str:
    text = (REPO / "htekd" / "__init__.py").read_text(encoding="utf-8")
    return re.search(r'__version__ = "([^"]+)"', text).group(1)


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    stale = []
    for source, target in PAGES.items():
        page = convert((REPO / source).read_text(encoding="utf-8"), version())
        path = REPO / target
        if check:
            if not path.is_file() or path.read_text(encoding="utf-8") != page:
                stale.append(target)
        else:
            path.parent.mkdir(exist_ok=True)
            path.write_text(page, encoding="utf-8")
    for target in stale:
        print(f"{target}: not what {next(s for s, t in PAGES.items() if t == target)} gives: run tools/build_man.py",
              file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
