"""Open a `snakemake --report` page in headless Chromium and check the screenshot is not blank.

    python .ci/check_report.py report.html --out shots/ [--show results/report/zoo.html]

Takes a screenshot of the report's first page and, with --show, of that result opened inside
the report (as a click on it would), then fails (exit 1, one line) if a screenshot is blank:
almost one colour, or too little contrast. Chromium: Debian's package `chromium`
(`apt-get install chromium`); run as root it needs --no-sandbox, which this script passes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
#: A screenshot is blank when one colour covers more than this share of its pixels ...
MAX_DOMINANT = 0.97
#: ... or when its grey levels' standard deviation is below this.
MIN_STDDEV = 8.0


def browser() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    sys.exit("check_report: no Chromium found — fix: apt-get install chromium")


def with_result_shown(report: Path, result: str, out: Path) -> Path:
    """A copy of the report that opens ``result`` on load, as a click on it in the report."""
    script = (
        "<script>window.addEventListener('load', () => setTimeout(() => {"
        f"const p = {json.dumps(result)};"
        "if (!(p in results)) { document.title = 'MISSING RESULT ' + p; return; }"
        "app.showResultInfo(p);"
        "app.setView({content: 'html', contentPath: results[p].data_uri, resultPath: p});"
        "}, 300));</script>"
    )
    text = report.read_text(encoding="utf-8")
    if result not in text:
        sys.exit(f"check_report: {result} is not in {report} — fix: mark it with report()")
    end = text.rindex("</body>")  # the page's own; the bundled scripts contain the string too
    out.write_text(text[:end] + script + text[end:], encoding="utf-8")
    return out


def screenshot(page: Path, png: Path, size: str) -> None:
    with tempfile.TemporaryDirectory(prefix="trtflow-chromium-") as profile:
        argv = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--window-size={size}",
                "--virtual-time-budget=15000", f"--screenshot={png}",
                page.resolve().as_uri()]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    if proc.returncode != 0 or not png.is_file():
        sys.exit(f"check_report: chromium failed ({proc.returncode}): {proc.stderr[-800:]}")


def blankness(png: Path) -> tuple[float, float]:
    """(share of the most common colour, standard deviation of the grey levels)."""
    from PIL import Image, ImageStat

    img = Image.open(png).convert("RGB")
    colors = img.getcolors(maxcolors=img.width * img.height)
    dominant = max(n for n, _ in colors) / (img.width * img.height)
    return dominant, ImageStat.Stat(img.convert("L")).stddev[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("report", type=Path)
    p.add_argument("--out", type=Path, required=True, help="folder for the screenshots")
    p.add_argument("--show", action="append", default=[], help="a result path to open too")
    p.add_argument("--window-size", default="1400,1000")
    args = p.parse_args(argv)
    if not args.report.is_file():
        sys.exit(f"check_report: {args.report} does not exist — fix: snakemake --report it")
    args.out.mkdir(parents=True, exist_ok=True)
    pages = {"report": args.report}
    for i, result in enumerate(args.show):
        copy = args.report.with_name(f".{args.report.stem}.show{i}{os.getpid()}.html")
        pages[Path(result).stem] = with_result_shown(args.report, result, copy)
    failed = []
    try:
        for name, page in pages.items():
            png = args.out / f"{name}.png"
            screenshot(page, png, args.window_size)
            dominant, stddev = blankness(png)
            blank = dominant > MAX_DOMINANT or stddev < MIN_STDDEV
            print(f"{png}: dominant colour {dominant:.1%}, grey stddev {stddev:.1f} — "
                  f"{'BLANK' if blank else 'ok'}")  # fmt: skip
            if blank:
                failed.append(str(png))
    finally:
        for page in pages.values():
            if page != args.report:
                page.unlink(missing_ok=True)
    if failed:
        print(f"check_report: blank screenshot(s): {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
