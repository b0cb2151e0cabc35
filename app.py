"""detdemo's Gradio app (the Hugging Face Space entry point).

The app itself is the subject of issue 5; until it lands this entry point says so instead of failing.
"""

from __future__ import annotations

import sys


def main() -> int:
    print("detdemo: the Gradio app is not built yet (planned). Meanwhile try `detdemo --help` or `detdemo models`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
