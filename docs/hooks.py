"""MkDocs hook: the command-line reference (docs/cli.md) is generated from the parser itself at build time, so it
cannot drift from the code."""

from __future__ import annotations

MARKER = "<!-- cli-reference -->"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    from hypermeta.cli import build_parser

    parser = build_parser()
    parts = ["```text", parser.format_help().rstrip(), "```"]
    for name, sub in parser._subparsers._group_actions[0].choices.items():  # noqa: SLF001
        parts += [f"### `hypermeta {name}`", "", "```text", sub.format_help().rstrip(), "```", ""]
    return markdown.replace(MARKER, "\n".join(parts))
