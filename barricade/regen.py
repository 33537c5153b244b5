"""Documents generated from the code, for ``scripts/regen``.

``python -m barricade.regen replies`` prints the reply catalogue (with the
replies the installed plugins declare) as ``docs/replies.md``; ``order``
prints the check order table as ``docs/check-order.md``.  It lives
here, above the catalogue and the plugins, so that ``replies.py`` needs to
import neither.
"""

from __future__ import annotations

import sys


def replies() -> str:
    from barricade.plugin import plugin_replies
    from barricade.replies import ENTRIES, Catalogue, render_markdown

    return render_markdown(Catalogue((*ENTRIES, *plugin_replies())))


def order() -> str:
    from barricade.policy.order import render_markdown

    return render_markdown()


DOCUMENTS = {"replies": replies, "order": order}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in DOCUMENTS:
        print(f"usage: python -m barricade.regen {{{','.join(DOCUMENTS)}}}", file=sys.stderr)
        return 2
    sys.stdout.write(DOCUMENTS[args[0]]())
    return 0


if __name__ == "__main__":
    sys.exit(main())
