"""Take docs/explorer.png: the profile explorer on the demo's sample person.

Runs `idstream demo --in-process --keep` (the demo's default traffic, no broker needed), opens
the URL it prints in headless Chromium (tests/support/browser.py) and saves the top of the
page. Run from the repository root: `.venv/bin/python scripts/explorer_screenshot.py`.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.browser import chromium  # noqa: E402

OUTPUT = ROOT / "docs" / "explorer.png"
HEIGHT = 1150  # the summary, the graph, "why" and the top of the profile and timeline


async def shoot(url: str) -> None:
    async with chromium() as browser:
        page = await browser.new_page(width=1400, height=HEIGHT)
        await page.goto(url)
        await page.wait_for("!document.getElementById('token-panel').hidden")
        await page.evaluate("document.getElementById('token-form').requestSubmit(); true")
        await page.wait_for("document.querySelectorAll('#timeline li').length > 0")
        assert not page.errors, page.errors
        await page.screenshot(OUTPUT, height=HEIGHT)


def main() -> int:
    demo = subprocess.Popen(
        [sys.executable, "-m", "idstream", "demo", "--in-process", "--keep"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(demo.stdout or ()), daemon=True).start()
    try:
        deadline = time.monotonic() + 300
        while not (found := re.search(r"profile explorer: (\S+)", "".join(lines))):
            if demo.poll() is not None or time.monotonic() > deadline:
                print("".join(lines), file=sys.stderr)
                return 1
            time.sleep(0.2)
        asyncio.run(shoot(found.group(1)))
        print(f"wrote {OUTPUT.relative_to(ROOT)} ({found.group(1)})")
        return 0
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(30)


if __name__ == "__main__":
    raise SystemExit(main())
